"""A service's health as every service reports it (its metrics port's /health, /health/ready; `svc.<service>
.health` on the bus; the gateway's /health and /health/ready, which aggregate them): `healthy`, `degraded`
(it serves, but a dependency that is not vital to it is failing or behind) or `unhealthy` (it cannot serve),
with one check per dependency and the seed's fields (status, timestamp, uptime, version)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

HealthStatus = Literal["healthy", "degraded", "unhealthy"]
# the value of the browserfleet_health_status / browserfleet_health_check_status gauges
STATUS_VALUE: dict[HealthStatus, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}


class HealthCheck(BaseModel):
    """One dependency as the service sees it."""

    status: HealthStatus
    detail: str = Field(description="what was found: a latency, a count, the error")
    critical: bool = Field(
        default=True,
        description="the service cannot serve without it: its failure makes the service unhealthy, where a "
        "failing non-critical check (a consumer behind, a service it calls for part of its work) degrades it",
    )


class HealthReport(BaseModel):
    """`status` is the worst of the checks (a failing non-critical check counts as degraded)."""

    service: str
    status: HealthStatus
    timestamp: datetime = Field(description="when the checks ran, UTC")
    uptime: float = Field(description="seconds since the process started")
    version: str
    checks: dict[str, HealthCheck] = Field(default_factory=dict)


def worst(statuses: list[HealthStatus]) -> HealthStatus:
    """The worst status of `statuses` (healthy when there are none)."""
    return max(statuses, key=STATUS_VALUE.__getitem__, default="healthy")
