"""Every query the scheduler makes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, or_, text, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .models import Schedule, Task, TaskAttempt, TaskLog

_TASKS = Task.__table__  # type: ignore[attr-defined]
# Built once and given the row as parameters: composing `insert(Task).values(...)` per call cost more
# CPU than the round trip it makes.
_INSERT_TASK = (
    insert(_TASKS).on_conflict_do_nothing(index_elements=["org_id", "idempotency_key"]).returning(_TASKS.c.id)
)


def _task_columns(values: dict[str, Any]) -> dict[str, Any]:
    """Attribute names to column names (`task_metadata` is the `metadata` column)."""
    row = dict(values)
    if "task_metadata" in row:
        row["metadata"] = row.pop("task_metadata")
    return row


async def insert_task(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert a task; False when (org_id, idempotency_key) already names one.

    ON CONFLICT waits for a concurrent insert of the same key to commit, so two racing creates
    end with one task and no aborted transaction.
    """
    return (await session.execute(_INSERT_TASK, _task_columns(values))).first() is not None


_GET_TASK_LOCKED = (
    select(Task)
    .where(Task.id == bindparam("task_id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


_LOCK_TASKS = (
    select(Task)
    .where(col(Task.id).in_(bindparam("task_ids", expanding=True)))
    .order_by(col(Task.id))
    .with_for_update()
    .execution_options(populate_existing=True)
)


async def lock_tasks(session: AsyncSession, task_ids: list[str]) -> list[Task]:
    """Lock and read several tasks, in id order: batches that lock in one order cannot deadlock."""
    return list((await session.exec(_LOCK_TASKS, params={"task_ids": task_ids})).all())


_GET_TASK_IN_ORG = select(Task).where(Task.id == bindparam("task_id"), Task.org_id == bindparam("org_id"))


async def get_task(
    session: AsyncSession, task_id: str, *, org_id: str | None = None, lock: bool = False
) -> Task | None:
    # the two hot reads (every worker update; every API read) use statements built once
    if lock and org_id is None:
        return (await session.exec(_GET_TASK_LOCKED, params={"task_id": task_id})).one_or_none()
    if org_id is not None and not lock:
        params = {"task_id": task_id, "org_id": org_id}
        return (await session.exec(_GET_TASK_IN_ORG, params=params)).one_or_none()
    stmt = select(Task).where(Task.id == task_id)
    if org_id is not None:
        stmt = stmt.where(Task.org_id == org_id)
    if lock:
        stmt = stmt.with_for_update()
    # populate_existing: a locked re-read must not be answered from the identity map
    result = await session.exec(stmt, execution_options={"populate_existing": True})
    return result.one_or_none()


async def get_task_by_idempotency_key(session: AsyncSession, org_id: str, key: str) -> Task | None:
    stmt = select(Task).where(Task.org_id == org_id, Task.idempotency_key == key)
    return (await session.exec(stmt)).one_or_none()


async def list_tasks(
    session: AsyncSession,
    org_id: str,
    *,
    status: str | None,
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[Task]:
    stmt = select(Task).where(Task.org_id == org_id)
    if status is not None:
        stmt = stmt.where(Task.status == status)
    if after is not None:
        stmt = stmt.where(tuple_(col(Task.created_at), col(Task.id)) < tuple_(*after))
    stmt = stmt.order_by(col(Task.created_at).desc(), col(Task.id).desc()).limit(limit)
    return list((await session.exec(stmt)).all())


# Built once: on this path, composing a SQLAlchemy statement per call cost more CPU than running it.
_CLAIM_ASSIGNED = text(
    """
    WITH claimed AS (
        UPDATE scheduler.tasks
           SET status = 'running', worker_id = :worker_id, started_at = :now, status_detail = NULL,
               updated_at = :now
         WHERE id = :task_id AND status = 'assigned' AND attempt = :attempt
           AND (CAST(:worker_org_id AS varchar) IS NULL OR org_id = :worker_org_id)
        RETURNING id, org_id, attempt, priority, timeout_seconds, spec
    ), recorded AS (
        INSERT INTO scheduler.task_attempts (task_id, attempt, worker_id, status, claimed_at, delivery)
        SELECT id, attempt, :worker_id, 'running', :now, :delivery FROM claimed
    )
    SELECT id, org_id, attempt, priority, timeout_seconds, spec FROM claimed
    """
).columns(spec=JSONB)


async def claim_assigned(
    session: AsyncSession,
    task_id: str,
    attempt: int,
    *,
    worker_id: str,
    worker_org_id: str | None,
    delivery: int | None,
    now: datetime,
) -> Any | None:
    """The common claim in one round trip: the task goes `assigned` -> `running` for this worker and its
    attempt row is written, in one statement (an UPDATE ... RETURNING feeding an INSERT).

    Returns the row (id, org_id, attempt, priority, timeout_seconds, spec), or None when the task is not
    `assigned` at that attempt for a worker that may take it (an org's own workers never take another
    org's tasks); the caller then takes the locked path that works out why. The UPDATE's WHERE is the
    state check: two racing claims serialise on the row, and the second finds it `running`.
    """
    params = {
        "task_id": task_id,
        "attempt": attempt,
        "worker_id": worker_id,
        "worker_org_id": worker_org_id,
        "delivery": delivery,
        "now": now,
    }
    return (await session.execute(_CLAIM_ASSIGNED, params)).first()


async def add_attempt(session: AsyncSession, attempt: TaskAttempt) -> None:
    session.add(attempt)
    await session.flush()


async def get_attempt(session: AsyncSession, task_id: str, attempt: int) -> TaskAttempt | None:
    stmt = select(TaskAttempt).where(TaskAttempt.task_id == task_id, TaskAttempt.attempt == attempt)
    return (await session.exec(stmt)).one_or_none()


_ATTEMPTS = TaskAttempt.__table__  # type: ignore[attr-defined]
_FINISH_ATTEMPT = (
    update(_ATTEMPTS)
    .where(
        _ATTEMPTS.c.task_id == bindparam("b_task_id"),
        _ATTEMPTS.c.attempt == bindparam("b_attempt"),
        _ATTEMPTS.c.finished_at.is_(None),
    )
    .values(status=bindparam("b_status"), finished_at=bindparam("b_finished_at"), error=bindparam("b_error"))
)


def attempt_close(
    task_id: str, attempt: int, status: str, now: datetime, error: str | None
) -> dict[str, Any]:
    """The parameters of one `finish_attempt`, for `finish_attempts`."""
    return {
        "b_task_id": task_id,
        "b_attempt": attempt,
        "b_status": status,
        "b_finished_at": now,
        "b_error": error,
    }


async def finish_attempts(session: AsyncSession, closes: list[dict[str, Any]]) -> None:
    """Several `finish_attempt`s as one executemany."""
    if closes:
        await session.execute(_FINISH_ATTEMPT, closes)


async def finish_attempt(
    session: AsyncSession, task_id: str, attempt: int, status: str, now: datetime, error: str | None
) -> None:
    """Close an attempt that is still open, in one UPDATE (no read first); a closed one stays as it is."""
    await session.execute(_FINISH_ATTEMPT, attempt_close(task_id, attempt, status, now, error))


async def save(session: AsyncSession, *rows: Task | TaskAttempt | Schedule) -> None:
    for row in rows:
        session.add(row)
    await session.flush()


# --- admission and reaping ---------------------------------------------------------------------
ADMISSION_LOCK = 0x62665F61646D  # pg advisory lock key: one admission pass at a time across replicas
PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


async def try_admission_lock(session: AsyncSession) -> bool:
    """Transaction-scoped: released by the commit. Another replica's pass is skipped, not queued."""
    got = (await session.exec(select(func.pg_try_advisory_xact_lock(ADMISSION_LOCK)))).one()
    return bool(got)


def _rank() -> Any:
    return case(
        *((col(Task.priority) == p, r) for p, r in PRIORITY_RANK.items()),
        else_=len(PRIORITY_RANK),
    )


async def admission_candidates(session: AsyncSession, now: datetime, limit: int) -> list[Task]:
    """Queued tasks that may start now, priority first then oldest first, locked (SKIP LOCKED: a row a
    claim or cancel holds is left for the next pass)."""
    stmt = (
        select(Task)
        .where(Task.status == "queued")
        .where(or_(col(Task.not_before).is_(None), col(Task.not_before) <= now))
        .order_by(_rank(), col(Task.created_at), col(Task.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.exec(stmt, execution_options={"populate_existing": True})).all())


async def active_counts(session: AsyncSession, org_ids: list[str]) -> dict[str, int]:
    if not org_ids:
        return {}
    stmt = (
        select(col(Task.org_id), func.count())
        .where(col(Task.org_id).in_(org_ids), col(Task.status).in_(("assigned", "running")))
        .group_by(col(Task.org_id))
    )
    return {org: int(n) for org, n in (await session.exec(stmt)).all()}


async def last_dispatched(session: AsyncSession, org_ids: list[str]) -> dict[str, datetime]:
    if not org_ids:
        return {}
    stmt = (
        select(col(Task.org_id), func.max(col(Task.dispatched_at)))
        .where(col(Task.org_id).in_(org_ids), col(Task.dispatched_at).is_not(None))
        .group_by(col(Task.org_id))
    )
    return {org: at for org, at in (await session.exec(stmt)).all() if at is not None}


async def overdue_running(
    session: AsyncSession, now: datetime, grace_seconds: float, limit: int
) -> list[Task]:
    deadline = col(Task.started_at) + func.make_interval(
        0, 0, 0, 0, 0, 0, col(Task.timeout_seconds) + grace_seconds
    )
    stmt = (
        select(Task)
        .where(Task.status == "running", col(Task.started_at).is_not(None), deadline < now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.exec(stmt, execution_options={"populate_existing": True})).all())


async def overdue_waiting(
    session: AsyncSession, now: datetime, queue_timeout_seconds: float, limit: int
) -> list[Task]:
    """Queued or dispatched-but-unclaimed for longer than the queue timeout (counted from the later of
    creation and the current attempt's earliest start)."""
    since = func.coalesce(col(Task.not_before), col(Task.created_at))
    stmt = (
        select(Task)
        .where(
            col(Task.status).in_(("pending", "queued", "assigned")),
            since + func.make_interval(0, 0, 0, 0, 0, 0, queue_timeout_seconds) < now,
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.exec(stmt, execution_options={"populate_existing": True})).all())


# --- lists, attempts, logs ---------------------------------------------------------------------
async def admin_list_tasks(
    session: AsyncSession,
    org_id: str,
    *,
    status: str | None,
    priority: str | None,
    worker_id: str | None,
    tag: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[Task]:
    stmt = select(Task).where(Task.org_id == org_id)
    if status is not None:
        stmt = stmt.where(Task.status == status)
    if priority is not None:
        stmt = stmt.where(Task.priority == priority)
    if worker_id is not None:
        # any attempt ran on that worker, not only the last one
        ran = select(TaskAttempt.task_id).where(TaskAttempt.worker_id == worker_id)
        stmt = stmt.where(or_(col(Task.worker_id) == worker_id, col(Task.id).in_(ran)))
    if tag is not None:
        stmt = stmt.where(col(Task.worker_tags).contains([tag]))
    if created_after is not None:
        stmt = stmt.where(col(Task.created_at) >= created_after)
    if created_before is not None:
        stmt = stmt.where(col(Task.created_at) < created_before)
    if after is not None:
        stmt = stmt.where(tuple_(col(Task.created_at), col(Task.id)) < tuple_(*after))
    stmt = stmt.order_by(col(Task.created_at).desc(), col(Task.id).desc()).limit(limit)
    return list((await session.exec(stmt)).all())


async def list_attempts(session: AsyncSession, task_id: str) -> list[TaskAttempt]:
    stmt = select(TaskAttempt).where(TaskAttempt.task_id == task_id).order_by(col(TaskAttempt.attempt))
    return list((await session.exec(stmt)).all())


async def insert_logs(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    stmt = (
        insert(TaskLog)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["task_id", "attempt", "seq"])
        .returning(col(TaskLog.id))
    )
    return len((await session.exec(stmt)).all())


async def max_log_seq(session: AsyncSession, task_id: str, attempt: int) -> int | None:
    stmt = select(func.max(col(TaskLog.seq))).where(TaskLog.task_id == task_id, TaskLog.attempt == attempt)
    value = (await session.exec(stmt)).one()
    return None if value is None else int(value)


async def list_logs(session: AsyncSession, task_id: str, since: int, limit: int) -> list[TaskLog]:
    stmt = (
        select(TaskLog)
        .where(TaskLog.task_id == task_id, col(TaskLog.id) > since)
        .order_by(col(TaskLog.id))
        .limit(limit)
    )
    return list((await session.exec(stmt)).all())


# --- schedules ---------------------------------------------------------------------------------
async def get_schedule(
    session: AsyncSession, schedule_id: str, *, org_id: str | None = None, lock: bool = False
) -> Schedule | None:
    stmt = select(Schedule).where(Schedule.id == schedule_id)
    if org_id is not None:
        stmt = stmt.where(Schedule.org_id == org_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt, execution_options={"populate_existing": True})).one_or_none()


async def list_schedules(session: AsyncSession, org_id: str) -> list[Schedule]:
    stmt = (
        select(Schedule).where(Schedule.org_id == org_id).order_by(col(Schedule.created_at), col(Schedule.id))
    )
    return list((await session.exec(stmt)).all())


async def due_schedules(session: AsyncSession, now: datetime, limit: int) -> list[Schedule]:
    stmt = (
        select(Schedule)
        .where(col(Schedule.paused).is_(False), col(Schedule.next_run_at).is_not(None))
        .where(col(Schedule.next_run_at) <= now)
        .order_by(col(Schedule.next_run_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.exec(stmt, execution_options={"populate_existing": True})).all())


async def delete_schedule(session: AsyncSession, schedule: Schedule) -> None:
    await session.delete(schedule)
    await session.flush()


async def insert_task_for_tick(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert a scheduled task; False when that (schedule, tick) already has one."""
    stmt = (
        insert(Task)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["schedule_id", "schedule_tick"])
        .returning(col(Task.id))
    )
    return (await session.exec(stmt)).first() is not None
