"""How an attempt ends: closed with the task's verdict, or lost (its worker vanished, its browser crashed)
and retried as attempt + 1 while attempts remain."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from browserfleet_contracts.events import EventType
from browserfleet_core.db import AsyncSession
from browserfleet_core.outbox import OutboxRelay

from . import events, metrics, repository, state
from .models import Task
from .policy import Policy

log = logging.getLogger(__name__)


async def finish(session: AsyncSession, task: Task, status: str, now: datetime, error: str | None) -> None:
    """Close the task's current attempt (if still open) with `status`."""
    await repository.finish_attempt(session, task.id, task.attempt, status, now, error)


async def lose(
    session: AsyncSession,
    relay: OutboxRelay,
    task: Task,
    policy: Policy,
    now: datetime,
    why: str,
    *,
    attempt_status: str = "lost",
) -> None:
    """The current attempt ended without a verdict on the task (its worker vanished, or its browser
    crashed): retry as attempt + 1 after a backoff, or fail the task once max_attempts is spent."""
    lost = task.attempt
    await finish(session, task, attempt_status, now, why)
    if lost >= task.max_attempts:
        state.move(task, "failed", now)
        task.error_message = (
            f"attempt {lost} {attempt_status} ({why}); no attempts left (max_attempts={task.max_attempts})"
        )
        task.status_detail = task.error_message
        task.completed_at = now
        await repository.save(session, task)
        await events.emit(relay, session, task, EventType.TASK_FAILED, attempt=lost)
        return
    delay = state.retry_backoff(lost, base=policy.retry_backoff_seconds, cap=policy.retry_backoff_cap_seconds)
    state.move(task, "queued", now)
    task.attempt = lost + 1
    task.worker_id = None
    task.started_at = None
    task.pool = None
    task.not_before = now + timedelta(seconds=delay)
    task.status_detail = f"attempt {lost} {attempt_status} ({why}); attempt {lost + 1} after {delay:g} s"
    await repository.save(session, task)
    metrics.count_requeue(session)
    log.warning("task %s: %s", task.id, task.status_detail)
