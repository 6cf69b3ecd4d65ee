"""Admission (which queued tasks an organization's limits let through) and reaping (overdue tasks)."""

from __future__ import annotations

from datetime import datetime

from browserfleet_core.db import AsyncSession
from sqlalchemy import ARRAY, String, func, literal
from sqlmodel import col, select

from .. import state
from ..models import Task

ADMISSION_LOCK = 0x62665F61646D  # pg advisory lock key: one admitter at a time (repository.dispatch)
PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


async def org_admission_state(
    session: AsyncSession, org_ids: list[str]
) -> tuple[dict[str, int], dict[str, datetime]]:
    """Per org: its tasks holding a slot (assigned or running), and when it was last dispatched to, in one
    round trip. The last dispatch is one probe at the end of (org_id, dispatched_at) per org, not an
    aggregate over everything the org ever ran: a pass costs the same after a million tasks as after ten."""
    if not org_ids:
        return {}, {}
    orgs = func.unnest(literal(org_ids, ARRAY(String()))).table_valued("org_id").render_derived(name="o")
    org = orgs.c.org_id
    active = (
        select(func.count())
        .where(col(Task.org_id) == org, col(Task.status).in_(sorted(state.ACTIVE)))
        .scalar_subquery()
    )
    last = (
        select(col(Task.dispatched_at))
        .where(col(Task.org_id) == org, col(Task.dispatched_at).is_not(None))
        .order_by(col(Task.dispatched_at).desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = (await session.exec(select(org, active, last))).all()
    return (
        {o: int(n) for o, n, _ in rows if n},
        {o: at for o, _, at in rows if at is not None},
    )


async def lock_active_task_ids(session: AsyncSession, org_id: str) -> list[str]:
    """The ids of the org's tasks a worker may hold (assigned or running), locked."""
    stmt = select(col(Task.id)).where(col(Task.org_id) == org_id, col(Task.status).in_(sorted(state.ACTIVE)))
    return list((await session.exec(stmt.with_for_update())).all())


async def running_tasks_of(session: AsyncSession, worker_id: str) -> list[Task]:
    """The tasks `worker_id` holds a running attempt of, locked (the worker was removed)."""
    stmt = (
        select(Task)
        .where(col(Task.worker_id) == worker_id, col(Task.status) == "running")
        .order_by(col(Task.id))
    )
    return list((await session.exec(stmt.with_for_update())).all())


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
