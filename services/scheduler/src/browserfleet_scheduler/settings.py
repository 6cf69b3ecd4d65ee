"""Scheduler settings, read from the environment."""

from __future__ import annotations

from browserfleet_core.settings import ServiceSettings
from pydantic import Field


class SchedulerSettings(ServiceSettings):
    service_name: str = "scheduler"
    migrate_on_start: bool = Field(
        default=True,
        description="run this service's migrations before serving (safe with replicas: an advisory lock serialises them)",
    )
    worker_auth_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        description="how long a worker key, once authenticated by worker-gateway, is trusted without asking again",
    )
    outbox_poll_seconds: float = Field(
        default=1.0, gt=0, description="outbox relay pass interval when no commit wakes it"
    )
    rpc_concurrency: int = Field(
        default=16, ge=1, le=1000, description="requests each svc.scheduler.* subject handles at once"
    )
    update_redelivery_seconds: float = Field(
        default=2.0,
        ge=0,
        description="delay before a TASK_UPDATES message whose handling failed is redelivered",
    )
