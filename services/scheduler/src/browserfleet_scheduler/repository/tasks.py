"""Tasks, their attempts and logs: the create, claim and read paths."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from browserfleet_core.db import AsyncSession
from sqlalchemy import bindparam, func, or_, text, tuple_, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select

from .. import state
from ..models import Schedule, Task, TaskAttempt, TaskLog, outbox
from .driver import Fixed

_TASKS = Task.__table__  # type: ignore[attr-defined]
# Built once and given the row as parameters: composing `insert(Task).values(...)` per call cost more
# CPU than the round trip it makes.
# the unique index over (org_id, idempotency_key) is partial (rows with a key): ON CONFLICT names its predicate
_INSERT_TASK = (
    insert(_TASKS)
    .on_conflict_do_nothing(
        index_elements=["org_id", "idempotency_key"], index_where=text("idempotency_key IS NOT NULL")
    )
    .returning(_TASKS.c.id)
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


_OUTBOX_COLUMNS = ("subject", "msg_id", "payload", "created_at")
_INSERT_WITH_EVENT: dict[tuple[str, ...], Any] = {}


def _insert_with_event(columns: tuple[str, ...]) -> Any:
    """INSERT of a task with these columns and, in the same statement, of one outbox row (parameters
    `task_<column>` and `outbox_<column>`), returning the outbox row's id. Built once per column set."""
    stmt = _INSERT_WITH_EVENT.get(columns)
    if stmt is None:
        created = (
            insert(_TASKS)
            .values({c: bindparam(f"task_{c}", type_=_TASKS.c[c].type) for c in columns})
            .returning(_TASKS.c.id)
            .cte("created")
        )
        params = [bindparam(f"outbox_{c}", type_=outbox.c[c].type) for c in _OUTBOX_COLUMNS]
        stmt = (
            insert(outbox)
            .from_select(list(_OUTBOX_COLUMNS), sa_select(*params).select_from(created))
            .returning(outbox.c.id)
        )
        _INSERT_WITH_EVENT[columns] = stmt
    return stmt


async def insert_task_with_event(
    conn: AsyncConnection, values: dict[str, Any], message: tuple[str, bytes, str, datetime]
) -> int:
    """A new task (no idempotency key: its id is new, so the insert cannot conflict) and its event's outbox
    row (subject, payload, msg_id, created_at) in one statement, which commits both or neither on an
    autocommit connection. Returns the outbox row's id."""
    row = _task_columns(values)
    columns = tuple(row)
    subject, payload, msg_id, created_at = message
    params = {f"task_{c}": v for c, v in row.items()}
    params |= {
        "outbox_subject": subject,
        "outbox_msg_id": msg_id,
        "outbox_payload": payload,
        "outbox_created_at": created_at,
    }
    return int((await conn.execute(_insert_with_event(columns), params)).scalar_one())


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


def _public_select() -> Any:
    """The columns of a task's public view (labelled with the attribute names views.public_from_values
    takes) plus its spec, of one task of one org: the API's read, built once."""
    from ..views import PUBLIC_COLUMNS

    columns = [_TASKS.c["metadata" if n == "task_metadata" else n].label(n) for n in PUBLIC_COLUMNS]
    return sa_select(*columns, _TASKS.c.spec).where(
        _TASKS.c.id == bindparam("task_id"), _TASKS.c.org_id == bindparam("org_id")
    )


_PUBLIC_IN_ORG = Fixed(_public_select())


async def public_row(conn: AsyncConnection, task_id: str, org_id: str) -> Mapping[str, Any] | None:
    """The public columns of the org's task (None: no such task in that org), on a connection of its own
    (`Database.statement()`: one statement, no transaction around it, no ORM object built), on the driver's
    connection (`Fixed`: SQLAlchemy's per-execution work was more of the API's read than the query itself)."""
    row = await _PUBLIC_IN_ORG.first(conn, {"task_id": task_id, "org_id": org_id})
    return None if row is None else row._asdict()


async def get_task_by_idempotency_key(session: AsyncSession, org_id: str, key: str) -> Task | None:
    stmt = select(Task).where(Task.org_id == org_id, Task.idempotency_key == key)
    return (await session.exec(stmt)).one_or_none()


def _sql_statuses(statuses: frozenset[str]) -> str:
    """A SQL list of status literals (the state machine's own names, never input)."""
    return ", ".join(f"'{s}'" for s in sorted(statuses))


# The statuses a claim moves to `running` from come from the state machine, so the SQL path and
# `state.move` cannot disagree. Built once: on this path, composing a SQLAlchemy statement per call cost
# more CPU than running it. _CLAIMED is the claim itself (the move to `running` and the attempt row); a batch
# of claims (`claim_batch.CLAIM_MANY`) builds its condition from the same table.
_CLAIMED = f"""
    WITH claimed AS (
        UPDATE scheduler.tasks
           SET status = 'running', worker_id = :worker_id, started_at = :now, status_detail = NULL,
               updated_at = :now
         WHERE id = :task_id AND status IN ({_sql_statuses(state.allowed_from("running"))})
           AND attempt = :attempt
           AND (CAST(:worker_org_id AS varchar) IS NULL OR org_id = :worker_org_id)
        RETURNING id, org_id, attempt, priority, timeout_seconds, spec, webhook_url
    ), recorded AS (
        INSERT INTO scheduler.task_attempts (task_id, attempt, worker_id, status, claimed_at, delivery)
        SELECT id, attempt, :worker_id, 'running', :now, :delivery FROM claimed
    )"""  # noqa: S608 (what is interpolated is the state machine's status names, never input)
CLAIM = text(
    _CLAIMED + "\n    SELECT id, org_id, attempt, priority, timeout_seconds, spec, webhook_url FROM claimed"  # noqa: S608
).columns(spec=JSONB)


@dataclass(frozen=True)
class Claim:
    """Which worker claims which attempt of a task, and when: the parameters of `_CLAIMED`. `worker_org_id`
    is the worker's own org (None for a shared worker), the only org whose tasks it may take."""

    task_id: str
    attempt: int
    worker_id: str
    worker_org_id: str | None
    delivery: int | None
    now: datetime


async def claim_assigned(session: AsyncSession, claim: Claim) -> Any | None:
    """The common claim in one round trip: the task goes `assigned` -> `running` for this worker and its
    attempt row is written, in one statement (an UPDATE ... RETURNING feeding an INSERT).

    Returns the row (id, org_id, attempt, priority, timeout_seconds, spec, webhook_url), or None when the task is not
    `assigned` at that attempt for a worker that may take it (an org's own workers never take another
    org's tasks); the caller then takes the locked path that works out why. The UPDATE's WHERE is the
    state check (built from `state.allowed_from("running")`): two racing claims serialise on the row, and
    the second finds it `running`.
    """
    return (await session.execute(CLAIM, vars(claim))).first()


async def add_attempt(session: AsyncSession, attempt: TaskAttempt) -> None:
    session.add(attempt)
    await session.flush()


async def get_attempt(session: AsyncSession, task_id: str, attempt: int) -> TaskAttempt | None:
    stmt = select(TaskAttempt).where(TaskAttempt.task_id == task_id, TaskAttempt.attempt == attempt)
    return (await session.exec(stmt)).one_or_none()


async def latest_attempt_of(session: AsyncSession, task_id: str, worker_id: str) -> int | None:
    """The latest attempt of a task that `worker_id` claimed, None if it never claimed one."""
    stmt = select(func.max(TaskAttempt.attempt)).where(
        TaskAttempt.task_id == task_id, TaskAttempt.worker_id == worker_id
    )
    found = (await session.exec(stmt)).one()
    return int(found) if found is not None else None


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


# --- lists, attempts, logs ---------------------------------------------------------------------
async def list_tasks(
    session: AsyncSession,
    org_id: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    status: str | None = None,
    priority: str | None = None,
    worker_id: str | None = None,
    tag: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> list[Task]:
    """The org's tasks, newest first, after the keyset cursor `after`; each filter given narrows them."""
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


async def insert_logs(session: AsyncSession, rows: list[dict[str, Any]]) -> set[int]:
    """Store the lines not stored yet; returns the `seq`s it stored (a re-sent line is skipped)."""
    if not rows:
        return set()
    stmt = (
        insert(TaskLog)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["task_id", "attempt", "seq"])
        .returning(col(TaskLog.seq))
    )
    return {int(row[0]) for row in (await session.exec(stmt)).all()}


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
