"""A user cancels a task: at once in the database; a worker running it is told after the commit."""

from __future__ import annotations

from datetime import datetime

from browserfleet_contracts.events import EventType
from browserfleet_contracts.task_admin import CancelTaskRequest
from browserfleet_contracts.tasks import TaskPublic
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import Conflict, Forbidden
from browserfleet_core.outbox import OutboxRelay

from . import attempts, events, repository, state
from .queries import own_task
from .views import to_public


async def cancel_task(
    session: AsyncSession, relay: OutboxRelay, req: CancelTaskRequest, now: datetime | None = None
) -> tuple[TaskPublic, bool]:
    """Cancel at once in the database. Returns the task and whether a worker runs it (the caller then
    signals `tasks.cancel.<id>` after commit; the worker's late result is ignored: the task is terminal)."""
    now = now or utcnow()
    if req.actor.role == "viewer":
        raise Forbidden("viewers cannot cancel tasks", code="insufficient_role")
    task = await own_task(session, req.actor.org_id, req.task_id, lock=True)
    if task.status not in state.CANCELLABLE:
        raise Conflict(f"task is already {task.status}", code="task_finished", field="task_id")
    was_running = task.status == "running"
    who = req.actor.user_id or req.actor.api_key_id or "a user"
    reason = f"cancelled by {who}" + (f": {req.reason}" if req.reason else "")
    state.move(task, "cancelled", now)
    task.error_message = reason
    task.status_detail = reason
    task.completed_at = now
    await repository.save(session, task)
    await attempts.finish(session, task, "cancelled", now, reason)
    await events.emit(relay, session, task, EventType.TASK_CANCELLED)
    return to_public(task), was_running
