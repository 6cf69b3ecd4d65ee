"""Every query of worker-gateway. Keys and invite codes are looked up by their SHA-256 only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .models import Worker, WorkerInvite


async def add(session: AsyncSession, row: Worker | WorkerInvite) -> None:
    session.add(row)
    await session.flush()


async def consume_invite(session: AsyncSession, code_hash: str, now: datetime) -> WorkerInvite | None:
    """Marks the invite used if it is unused and unexpired, in one statement: two registrations racing
    for one code cannot both win."""
    stmt = (
        update(WorkerInvite)
        .where(
            col(WorkerInvite.code_hash) == code_hash,
            col(WorkerInvite.used_at).is_(None),
            col(WorkerInvite.expires_at) > now,
        )
        .values(used_at=now)
        .returning(col(WorkerInvite.id))
    )
    invite_id = (await session.exec(stmt)).scalar_one_or_none()
    if invite_id is None:
        return None
    return await session.get(WorkerInvite, invite_id, populate_existing=True)


async def active_worker_by_key(session: AsyncSession, key_hash: str) -> Worker | None:
    stmt = select(Worker).where(Worker.key_hash == key_hash, col(Worker.revoked_at).is_(None))
    return (await session.exec(stmt)).first()


async def record_heartbeat(
    session: AsyncSession, key_hash: str, *, now: datetime, busy: bool, running_tasks: int, slots: int
) -> str | None:
    stmt = (
        update(Worker)
        .where(col(Worker.key_hash) == key_hash, col(Worker.revoked_at).is_(None))
        .values(last_seen=now, busy=busy, running_tasks=running_tasks, slots=slots)
        .returning(col(Worker.id))
    )
    return (await session.exec(stmt)).scalar_one_or_none()


async def set_last_seen(session: AsyncSession, worker_id: str, when: datetime | None) -> None:
    await session.exec(update(Worker).where(col(Worker.id) == worker_id).values(last_seen=when))


async def visible_workers(session: AsyncSession, org_id: str) -> list[Worker]:
    """The org's own workers and the platform-wide ones (org_id NULL) that also serve it."""
    stmt = (
        select(Worker)
        .where(
            or_(col(Worker.org_id) == org_id, col(Worker.org_id).is_(None)),
            col(Worker.revoked_at).is_(None),
        )
        .order_by(col(Worker.created_at), col(Worker.id))
    )
    return list((await session.exec(stmt)).all())
