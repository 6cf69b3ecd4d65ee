"""Configuration of the webhooks service (environment variables, case-insensitive)."""

from __future__ import annotations

from browserfleet_core.settings import ServiceSettings
from pydantic import Field


class WebhooksSettings(ServiceSettings):
    service_name: str = "webhooks"
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="per-attempt HTTP timeout")
    webhook_max_attempts: int = Field(default=8, ge=1, description="attempts before a delivery is dead")
    webhook_backoff_base_seconds: float = Field(
        default=2.0, ge=0, description="first retry delay; doubles per attempt, jittered, capped"
    )
    webhook_backoff_cap_seconds: float = Field(default=3600.0, ge=0)
    webhook_allow_private_targets: bool = Field(
        default=False,
        description="deliver to loopback/private/link-local/metadata addresses (tests and the dev stack only)",
    )
    webhook_concurrency: int = Field(default=16, ge=1, description="deliveries in flight per replica")
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="how often the dispatcher looks for due retries when nothing wakes it"
    )
