"""What workers report on TASK_UPDATES: log lines, and the result that ends an attempt (the task's verdict,
or a retry when the worker's browser crashed under it). A worker whose task ran past its `timeout_seconds`
reports `timed_out`: the task ends `timed_out` with `task.timed_out`, as the reaper ends one whose worker
went quiet, and is not retried (the task's own limit ran out, not the worker)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from browserfleet_contracts.events import EventType
from browserfleet_contracts.tasks import TaskUpdateMessage, artifact_attempt, artifact_object_name
from browserfleet_core.db import AsyncSession, Database, jsonable, utcnow
from browserfleet_core.outbox import OutboxRelay
from pydantic import BaseModel

from . import attempts, events, repository, senders, state
from .models import Task
from .policy import Policy
from .queries import find_task, is_uuid

log = logging.getLogger(__name__)


# the verdicts a running task may take (the state machine's word), the ones `record_updates` writes in one statement
_FINISHES = frozenset(s for s in ("completed", "failed", "timed_out") if "running" in state.allowed_from(s))


async def record_updates(
    db: Database, relay: OutboxRelay, msgs: list[TaskUpdateMessage], policy: Policy | None = None
) -> bool:
    """Record a batch of worker updates. The common case, a result that ends the attempt its worker runs, is
    written for the whole batch in one statement on an autocommit connection
    (`repository.results.finish_running`): each task's verdict, its attempt closed and its event in the
    outbox, together, with no ORM session. Every other update, and a result that statement did not write
    (the task no longer runs that attempt for that worker, or holds artifacts to merge), goes through
    `apply_updates` in one transaction, which says why or handles it. A task with more than one update in
    the batch (a log line before its result, a redelivery) takes that path in full, so its updates keep
    their order. Returns whether any task changed; safe to run again on the same updates."""
    now = utcnow()
    counts = Counter(m.task_id for m in msgs if m.kind != "started")
    fast = [m for m in msgs if counts[m.task_id] == 1 and _finishes_alone(m)]
    finished: set[str] = set()
    if fast:
        batch = sorted((_finish_of(m, now) for m in fast), key=lambda f: f.task_id)
        async with db.statement() as conn:
            done = await repository.finish_running(conn, batch, now)
        await relay.committed(done.outbox)
        finished = done.task_ids
    rest = [m for m in msgs if m.task_id not in finished]
    if not rest:
        return bool(finished)
    return await db.run(apply_updates, relay, rest, policy, now) or bool(finished)


def _finishes_alone(msg: TaskUpdateMessage) -> bool:
    """A result the one statement can record: a verdict, no log lines to store, not a crash to retry."""
    return (
        msg.kind == "result"
        and msg.status in _FINISHES
        and not msg.logs
        and not (msg.status == "failed" and msg.retryable)
        and is_uuid(msg.task_id)
    )


def _finish_of(msg: TaskUpdateMessage, now: datetime) -> repository.Finish:
    assert msg.status is not None
    return repository.Finish(
        task_id=msg.task_id,
        attempt=msg.attempt,
        worker_id=msg.worker_id,
        status=msg.status,
        result=None if msg.result is None else json.dumps(msg.result, default=str),  # as `jsonable` stores it
        error_message=msg.error_message,
        error_step=msg.error_step,
        execution_time=msg.execution_time_seconds,
        # the row is written only while it stores no artifacts: this attempt's reported ones are all of them
        artifacts=json.dumps(reported_artifacts(msg)),
        event=events.finished_template(
            msg.task_id,
            msg.worker_id,
            msg.attempt,
            msg.status,
            msg.error_message,
            # `task.timed_out` happens once per task (the reaper may be the one to say it)
            msg.status != "timed_out",
            now,
        ),
    )


async def apply_updates(
    session: AsyncSession,
    relay: OutboxRelay,
    msgs: list[TaskUpdateMessage],
    policy: Policy | None = None,
    now: datetime | None = None,
) -> bool:
    """Record a batch of worker updates in one transaction, in arrival order. Returns whether any task
    changed. The batch's tasks are locked up front in id order, so two replicas' batches cannot deadlock
    on each other (every other writer locks one task, or skips locked ones)."""
    now = now or utcnow()
    wanted = sorted({m.task_id for m in msgs if m.kind != "started" and is_uuid(m.task_id)})
    tasks = {t.id: t for t in await repository.lock_tasks(session, wanted)} if wanted else {}
    # the outcomes' writes go out together at the end (one UPDATE batch per table, one outbox INSERT), so
    # a batch of results holds the event loop, which it shares with every claim and create, only briefly
    finished = FinishedBatch()
    changed = False
    for msg in msgs:
        changed |= await apply_update(session, relay, msg, now, policy, tasks=tasks, finished=finished)
    await finished.write(session, relay)
    return changed


@dataclass
class FinishedBatch:
    """Outcomes recorded in memory by `apply_update` during `apply_updates`, written in bulk at the end.
    Later updates of the same batch see the task as changed: they read the same (locked) row object."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, BaseModel | bytes, str]] = field(default_factory=list)

    async def write(self, session: AsyncSession, relay: OutboxRelay) -> None:
        await session.flush()  # the changed task rows, as one executemany
        await repository.finish_attempts(session, self.attempts)
        await relay.enqueue_many(session, self.events)


async def apply_update(
    session: AsyncSession,
    relay: OutboxRelay,
    msg: TaskUpdateMessage,
    now: datetime | None = None,
    policy: Policy | None = None,
    *,
    tasks: dict[str, Task] | None = None,
    finished: FinishedBatch | None = None,
) -> bool:
    """Record what a worker reported. Returns whether the task changed: a redelivered, stale or foreign
    update changes nothing and is acknowledged. A failure the worker marks `retryable` (its browser
    crashed under the task) is retried as a new attempt while attempts remain. `tasks`: rows this
    transaction already locked (`apply_updates`)."""
    now = now or utcnow()
    if msg.kind == "started":
        return False  # the claim already moved the task to running
    if tasks is not None:
        task = tasks.get(msg.task_id)
    else:
        task = await find_task(session, msg.task_id, lock=True)
    if task is None:
        log.warning("update for unknown task %s; ignored", msg.task_id)
        return False
    holder = (
        task.worker_id
        if msg.attempt == task.attempt
        else await _attempt_worker(session, task.id, msg.attempt)
    )
    if msg.worker_id != holder:  # a worker speaking about an attempt it does not hold: nothing changes
        senders.not_claimant(task, msg, holder)
        return False
    if msg.kind == "security":
        report = senders.security_event(task, msg, now)
        if report is not None and finished is not None:
            finished.events.append(report)
        elif report is not None:
            await relay.enqueue_many(session, [report])
        return False
    if msg.kind == "log" or msg.logs:
        stored = await _store_logs(session, task, msg, now)
        log_events = events.log_messages(task.org_id, task.id, msg.attempt, stored)
        if finished is not None:
            finished.events.extend(log_events)
        else:
            await relay.enqueue_many(session, [*log_events])
    if msg.kind == "log":
        return False
    if msg.status not in ("completed", "failed", "timed_out"):
        log.warning(
            "result update for task %s without a completed/failed/timed_out status; ignored", msg.task_id
        )
        return False
    if task.status != "running" or msg.attempt != task.attempt or msg.worker_id != task.worker_id:
        log.info(
            "result for task %s attempt %d from %s ignored (task %s, attempt %d, worker %s)",
            task.id, msg.attempt, msg.worker_id, task.status, task.attempt, task.worker_id,
        )  # fmt: skip
        return False
    # kept on either path: a crashed attempt's failure screenshot and trace are what explain the crash
    task.artifacts = with_attempt_artifacts(task, msg)
    if msg.status == "failed" and msg.retryable and task.attempt < task.max_attempts:
        why = f"the worker's browser failed: {msg.error_message or 'no detail'}"[:1000]
        await attempts.lose(session, relay, task, policy or Policy(), now, why, attempt_status="failed")
        return True

    state.move(task, msg.status, now)
    task.result = jsonable(msg.result) if msg.result is not None else None
    task.error_message = msg.error_message
    task.error_step = msg.error_step
    task.status_detail = None
    task.completed_at = now
    task.execution_time_seconds = (
        msg.execution_time_seconds
        if msg.execution_time_seconds is not None
        else ((now - task.started_at).total_seconds() if task.started_at else None)
    )
    event = EventType.task(msg.status)
    # `task.timed_out` happens once per task (the reaper may be the one to say it): its id is the task's
    per_attempt = None if msg.status == "timed_out" else task.attempt
    if finished is not None:
        session.add(task)
        finished.attempts.append(
            repository.attempt_close(task.id, task.attempt, msg.status, now, msg.error_message)
        )
        finished.events.append(events.task_message(task, event, attempt=per_attempt))
        return True
    await repository.save(session, task)
    await attempts.finish(session, task, msg.status, now, msg.error_message)
    await events.emit(relay, session, task, event, attempt=per_attempt)
    return True


async def _store_logs(
    session: AsyncSession, task: Task, msg: TaskUpdateMessage, now: datetime
) -> list[dict[str, Any]]:
    """Store the update's lines; returns the rows stored now, in line order (what `task.log` announces)."""
    if not msg.logs or msg.attempt > task.attempt or msg.attempt < 1:
        return []
    base: int | None = None
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(msg.logs):
        seq = line.seq
        if seq is None:
            # unnumbered lines (a worker that does not number them) go after what is stored
            if base is None:
                top = await repository.max_log_seq(session, task.id, msg.attempt)
                base = 0 if top is None else top + 1
            seq = base + i
        rows.append(
            {
                "task_id": task.id,
                "attempt": msg.attempt,
                "seq": seq,
                "level": line.level,
                "message": line.message[:10_000],
                "log_metadata": jsonable(
                    dict(line.metadata, **({"step": line.step} if line.step is not None else {}))
                ),
                "at": line.at or now,
            }
        )
    stored = await repository.insert_logs(session, rows)
    fresh = {row["seq"]: row for row in reversed(rows) if row["seq"] in stored}  # the first of a repeated seq
    return [fresh[seq] for seq in sorted(fresh)]


async def _attempt_worker(session: AsyncSession, task_id: str, attempt: int) -> str | None:
    row = await repository.get_attempt(session, task_id, attempt)
    return row.worker_id if row is not None else None


def _artifact_attempt(ref: Mapping[str, Any]) -> int:
    """The attempt that stored an artifact (0 for a ref not named by attempt)."""
    return artifact_attempt(str(ref.get("object_name", ""))) or 0


def with_attempt_artifacts(task: Task, msg: TaskUpdateMessage) -> list[dict[str, Any]]:
    """The task's artifacts with those of `msg.attempt` replaced by the update's, every other attempt's
    kept; sorted by attempt, in stored order within one. Replacing rather than appending keeps a
    redelivered update from listing an artifact twice. A ref naming an object outside this attempt's
    `<task_id>/<attempt>/` is dropped: the gateway serves whatever object a ref names, and files it under
    the attempt that name carries."""
    kept = [dict(ref) for ref in task.artifacts if _artifact_attempt(ref) != msg.attempt]
    return sorted([*kept, *reported_artifacts(msg)], key=_artifact_attempt)  # stable: stored order within one


def reported_artifacts(msg: TaskUpdateMessage) -> list[dict[str, Any]]:
    """The update's artifact refs that name objects under its own attempt, in the order reported."""
    prefix = artifact_object_name(msg.task_id, msg.attempt, "")
    reported: list[dict[str, Any]] = []
    for ref in msg.artifacts:
        if ref.object_name.startswith(prefix):
            reported.append(ref.model_dump(mode="json"))
        else:
            log.warning(
                "task %s attempt %d: artifact %r names object %r, not one under %s; not recorded",
                msg.task_id, msg.attempt, ref.name, ref.object_name, prefix,
            )  # fmt: skip
    return reported
