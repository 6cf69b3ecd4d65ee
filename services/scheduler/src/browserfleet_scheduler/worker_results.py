"""A worker that speaks HTTP reports its attempt's result (`POST /workers/tasks/{id}/result`, the seed's
route). It goes through the very code a TASK_UPDATES result goes through (`outcomes.apply_update`), under the
same rules as the bus: the key names the worker, and only the worker that claimed an attempt reports on it.

What the worker hears back: 200 when the result was recorded, or when it had already been (the same status
again: a retried request changes nothing); 404 for a task it never claimed (another org's, or nobody's, look
the same); 409 when its attempt is no longer running (cancelled, timed out, lost and retried, or finished with
another status). Nothing is written on any refusal.
"""

from __future__ import annotations

from datetime import datetime

from browserfleet_contracts.tasks import TaskUpdateMessage, WorkerResultReply, WorkerResultRequest
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import Conflict, NotFound
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.projection import attributes

from . import outcomes, repository, state
from .models import Task
from .policy import Policy
from .queries import find_task
from .workerauth import known_worker


async def report_result(
    session: AsyncSession,
    relay: OutboxRelay,
    req: WorkerResultRequest,
    identity: WorkerIdentity | None,
    policy: Policy | None = None,
    now: datetime | None = None,
) -> WorkerResultReply:
    identity = known_worker(identity)
    task = await find_task(session, req.task_id, lock=True)
    if task is None or (identity.org_id is not None and identity.org_id != task.org_id):
        raise NotFound("task not found", field="task_id")
    attempt = await _attempt(session, task, identity.worker_id, req.attempt)
    if attempt is None:
        raise NotFound("task not found", field="task_id")  # not a task this worker ever held
    update = TaskUpdateMessage(
        task_id=task.id,
        attempt=attempt,
        worker_id=identity.worker_id,
        kind="result",
        execution_time_seconds=req.execution_time,
        **attributes(req, "status", "result", "error_message", "error_step", "logs"),
    )
    was = task.status
    recorded = await outcomes.apply_update(
        session, relay, update, now or utcnow(), policy, tasks={task.id: task}
    )
    if recorded:
        return WorkerResultReply(task_id=task.id, attempt=attempt, status=task.status, recorded=True)
    if attempt == task.attempt and task.worker_id == identity.worker_id and was == req.status:
        return WorkerResultReply(task_id=task.id, attempt=attempt, status=task.status, recorded=False)
    now_is = f"the task is {task.status}" + (f" at attempt {task.attempt}" if task.attempt != attempt else "")
    raise Conflict(
        f"attempt {attempt} is no longer running ({now_is}): its result cannot be recorded",
        field="status" if state.is_terminal(task.status) and attempt == task.attempt else "attempt",
        code="attempt_not_running",
    )


async def _attempt(session: AsyncSession, task: Task, worker_id: str, asked: int | None) -> int | None:
    """The attempt reported on, if this worker holds (or held) it: the one asked for, else its latest."""
    if asked is None:
        if task.worker_id == worker_id:
            return task.attempt
        return await repository.latest_attempt_of(session, task.id, worker_id)
    if asked == task.attempt and task.worker_id == worker_id:
        return asked
    held = await repository.get_attempt(session, task.id, asked)
    return asked if held is not None and held.worker_id == worker_id else None
