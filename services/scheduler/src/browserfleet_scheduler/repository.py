"""Every query the scheduler makes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .models import Task, TaskAttempt


async def insert_task(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert a task; False when (org_id, idempotency_key) already names one.

    ON CONFLICT waits for a concurrent insert of the same key to commit, so two racing creates
    end with one task and no aborted transaction.
    """
    stmt = (
        insert(Task)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["org_id", "idempotency_key"])
        .returning(col(Task.id))
    )
    return (await session.exec(stmt)).first() is not None


async def get_task(
    session: AsyncSession, task_id: str, *, org_id: str | None = None, lock: bool = False
) -> Task | None:
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


async def add_attempt(session: AsyncSession, attempt: TaskAttempt) -> None:
    session.add(attempt)
    await session.flush()


async def get_attempt(session: AsyncSession, task_id: str, attempt: int) -> TaskAttempt | None:
    stmt = select(TaskAttempt).where(TaskAttempt.task_id == task_id, TaskAttempt.attempt == attempt)
    return (await session.exec(stmt)).one_or_none()


async def save(session: AsyncSession, *rows: Task | TaskAttempt) -> None:
    for row in rows:
        session.add(row)
    await session.flush()
