"""Scheduler settings, read from the environment."""

from __future__ import annotations

from browserfleet_core.settings import OutboxSettings, ServiceSettings, WorkerAuthSettings
from pydantic import Field

from .policy import Policy


class SchedulerSettings(OutboxSettings, WorkerAuthSettings, ServiceSettings):
    service_name: str = "scheduler"
    migrate_on_start: bool = Field(
        default=True,
        description="run this service's migrations before serving (safe with replicas: an advisory lock serialises them)",
    )
    rpc_concurrency: int = Field(
        default=16, ge=1, le=1000, description="requests each svc.scheduler.* subject handles at once"
    )
    update_redelivery_seconds: float = Field(
        default=2.0,
        ge=0,
        description="delay before a TASK_UPDATES message whose handling failed is redelivered",
    )
    # --- admission, retries, timeouts ---------------------------------------------------------
    pools: dict[str, list[str]] = Field(
        default_factory=lambda: {"default": list[str]()},
        description="the platform's default worker pools and their tag sets (JSON), routed to beside the "
        "pools workers registered in (worker-gateway): a task goes to a pool whose tags include all of its "
        "worker_tags",
    )
    pool_registry_seconds: float = Field(
        default=5.0,
        ge=0,
        description="how long the pools workers registered in (asked of worker-gateway) are reused; a new "
        "pool is routed to within this",
    )
    plan_concurrency: dict[str, int] = Field(
        default_factory=lambda: {"free": 2, "team": 10, "business": 50, "enterprise": 200},
        description="tasks an organization may have assigned or running at once, per plan (JSON)",
    )
    default_org_concurrency: int = Field(
        default=10, ge=1, description="the limit when the caller's plan is unknown or not given"
    )
    admission_poll_seconds: float = Field(
        default=1.0, gt=0, description="admission/reaper pass interval when nothing wakes it"
    )
    admission_batch: int = Field(default=100, ge=1, le=10_000, description="tasks admitted per pass")
    retry_backoff_seconds: float = Field(
        default=2.0, ge=0, description="wait before the 2nd attempt of a lost task; doubles per attempt"
    )
    retry_backoff_cap_seconds: float = Field(default=300.0, ge=0)
    queue_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="a task not started this long after it was queued ends timed_out"
    )
    run_timeout_grace_seconds: float = Field(
        default=5.0, ge=0, description="slack past timeout_seconds before the scheduler times a run out"
    )
    schedule_poll_seconds: float = Field(default=1.0, gt=0, description="cron schedule pass interval")

    def policy(self) -> Policy:
        return Policy(
            pools={name: frozenset(tags) for name, tags in self.pools.items()},
            plan_limits=dict(self.plan_concurrency),
            default_concurrency=self.default_org_concurrency,
            batch=self.admission_batch,
            retry_backoff_seconds=self.retry_backoff_seconds,
            retry_backoff_cap_seconds=self.retry_backoff_cap_seconds,
            queue_timeout_seconds=self.queue_timeout_seconds,
            run_timeout_grace_seconds=self.run_timeout_grace_seconds,
        )
