"""Schedules and the tasks their ticks create."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from browserfleet_core.db import AsyncSession
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select

from ..models import Schedule, Task


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
        # the unique index is partial (tasks of a schedule): ON CONFLICT names its predicate
        .on_conflict_do_nothing(
            index_elements=["schedule_id", "schedule_tick"], index_where=text("schedule_id IS NOT NULL")
        )
        .returning(col(Task.id))
    )
    return (await session.exec(stmt)).first() is not None
