"""Worker-gateway settings."""

from __future__ import annotations

from browserfleet_core.settings import ServiceSettings
from pydantic import Field


class WorkerGatewaySettings(ServiceSettings):
    service_name: str = "worker-gateway"
    offline_after_seconds: float = Field(
        default=15.0, gt=0, description="A worker whose last heartbeat is older than this is offline."
    )
