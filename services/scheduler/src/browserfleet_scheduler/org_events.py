"""Organization deletion (auth's `organization.deleted` on EVENTS): the org's tasks and schedules go.

Tasks still assigned or running are told to stop (`tasks.cancel.<id>`) once the deletion has committed; their
attempts and log lines go with them (foreign-key cascade). A dispatch already on TASKS finds no task when its
worker claims it, so the claim is refused and the worker drops it. Idempotent: a second event removes nothing.
"""

from __future__ import annotations

from browserfleet_core.db import AsyncSession
from browserfleet_core.org_events import delete_org_rows, org_deleted_router
from faststream.nats import NatsRouter

from . import repository
from .models import SchedulerBase
from .runtime import Runtime

# tables without an org_id column: removed through their task (cascade), or not org data (the outbox)
NOT_ORG_SCOPED = frozenset({"task_attempts", "task_logs", "outbox"})


async def purge_org(session: AsyncSession, org_id: str) -> tuple[dict[str, int], list[str]]:
    """Delete the org's tasks and schedules; returns the rows removed and the ids of tasks that were active."""
    to_stop = await repository.lock_active_task_ids(session, org_id)
    return await delete_org_rows(session, SchedulerBase.metadata, org_id), to_stop


def build_org_events_router(rt: Runtime, service: str = "scheduler") -> NatsRouter:
    async def purge(org_id: str) -> dict[str, int]:
        removed, to_stop = await rt.db.run(purge_org, org_id)
        for task_id in to_stop:
            await rt.cancel_signal(task_id)
        rt.wake.set()  # nothing of that org is admitted any more; others may proceed
        return removed

    return org_deleted_router(service, purge)
