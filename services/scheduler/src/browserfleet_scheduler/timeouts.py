"""The reaper: a task that ran past its timeout, or waited past the queue timeout, ends `timed_out`."""

from __future__ import annotations

from datetime import datetime

from browserfleet_contracts.events import EventType
from browserfleet_core.db import AsyncSession
from browserfleet_core.outbox import OutboxRelay

from . import attempts, events, repository, state
from .policy import Policy


async def reap(session: AsyncSession, relay: OutboxRelay, policy: Policy, now: datetime) -> list[str]:
    """Time out what overran. Returns the ids of tasks a worker may still be running (to signal)."""
    signal: list[str] = []
    for task in await repository.overdue_running(session, now, policy.run_timeout_grace_seconds, policy.scan):
        why = f"ran longer than its timeout of {task.timeout_seconds} s"
        state.move(task, "timed_out", now)
        task.error_message = task.status_detail = why
        task.completed_at = now
        if task.started_at is not None:
            task.execution_time_seconds = (now - task.started_at).total_seconds()
        await repository.save(session, task)
        await attempts.finish(session, task, "timed_out", now, why)
        await events.emit(relay, session, task, EventType.TASK_TIMED_OUT)
        signal.append(task.id)
    for task in await repository.overdue_waiting(session, now, policy.queue_timeout_seconds, policy.scan):
        why = f"not started within the queue timeout of {policy.queue_timeout_seconds:g} s" + (
            f" ({task.status_detail})" if task.status_detail else ""
        )
        state.move(task, "timed_out", now)
        task.error_message = task.status_detail = why
        task.completed_at = now
        await repository.save(session, task)
        await events.emit(relay, session, task, EventType.TASK_TIMED_OUT)
    return signal
