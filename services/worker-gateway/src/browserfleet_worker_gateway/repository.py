"""Every query of worker-gateway. Keys and invite codes are looked up by their SHA-256 only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from browserfleet_core.db import AsyncSession
from browserfleet_core.org_events import delete_org_rows
from sqlalchemy import and_, case, func, or_, update
from sqlalchemy import select as select_columns
from sqlmodel import col, select

from .models import Worker, WorkerInvite, WorkersBase

# tables without an org_id column, which purge_org does not reach (the tests pin this list)
NOT_ORG_SCOPED: frozenset[str] = frozenset({"outbox"})


async def add(session: AsyncSession, row: Worker | WorkerInvite) -> None:
    session.add(row)
    await session.flush()


# --- invites ------------------------------------------------------------------------------------------
async def consume_invite(session: AsyncSession, code_hash: str, now: datetime) -> WorkerInvite | None:
    """Counts one use of the invite if it may still be used (unrevoked, unexpired; a one-time invite unused,
    a pool invite under its cap), in one statement: two registrations racing for a one-time code cannot both
    win, and a capped pool invite is never used past its cap. The caller's transaction undoes the use if the
    registration fails after it."""
    usable = or_(
        and_(col(WorkerInvite.multi_use).is_(False), col(WorkerInvite.used_at).is_(None)),
        and_(
            col(WorkerInvite.multi_use).is_(True),
            or_(col(WorkerInvite.max_uses).is_(None), col(WorkerInvite.uses) < col(WorkerInvite.max_uses)),
        ),
    )
    stmt = (
        update(WorkerInvite)
        .where(
            col(WorkerInvite.code_hash) == code_hash,
            col(WorkerInvite.revoked_at).is_(None),
            col(WorkerInvite.expires_at) > now,
            usable,
        )
        .values(used_at=now, uses=col(WorkerInvite.uses) + 1)
        .returning(col(WorkerInvite.id))
    )
    invite_id = (await session.exec(stmt)).scalar_one_or_none()
    if invite_id is None:
        return None
    return await session.get(WorkerInvite, invite_id, populate_existing=True)


async def invite_by_hash(session: AsyncSession, code_hash: str, *, lock: bool = False) -> WorkerInvite | None:
    stmt = select(WorkerInvite).where(WorkerInvite.code_hash == code_hash)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def org_invites(session: AsyncSession, org_id: str | None) -> list[WorkerInvite]:
    owner = col(WorkerInvite.org_id).is_(None) if org_id is None else col(WorkerInvite.org_id) == org_id
    stmt = (
        select(WorkerInvite).where(owner).order_by(col(WorkerInvite.created_at).desc(), col(WorkerInvite.id))
    )
    return list((await session.exec(stmt)).all())


async def org_invite(session: AsyncSession, org_id: str, invite_id: str) -> WorkerInvite | None:
    stmt = (
        select(WorkerInvite)
        .where(col(WorkerInvite.id) == invite_id, col(WorkerInvite.org_id) == org_id)
        .with_for_update()
    )
    return (await session.exec(stmt)).first()


async def configured_invites(session: AsyncSession) -> list[WorkerInvite]:
    stmt = select(WorkerInvite).where(col(WorkerInvite.configured).is_(True)).with_for_update()
    return list((await session.exec(stmt)).all())


# --- workers ------------------------------------------------------------------------------------------
async def worker_by_key(session: AsyncSession, key_hash: str, *, lock: bool = False) -> Worker | None:
    """The key's worker, revoked or not (the caller says which it accepts)."""
    stmt = select(Worker).where(Worker.key_hash == key_hash)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def unseen_registration(
    session: AsyncSession, invite_id: str, public_key: str, since: datetime
) -> Worker | None:
    """The worker that the invite registered with this public key since `since` and whose key was never
    used (no beat, no status, no new public key), removed or not, locked: a registration repeated because its
    reply was lost."""
    stmt = (
        select(Worker)
        .where(
            col(Worker.invite_id) == invite_id,
            col(Worker.public_key) == public_key,
            col(Worker.key_nonce).is_not(None),
            col(Worker.last_seen).is_(None),
            col(Worker.created_at) >= since,
        )
        .order_by(col(Worker.created_at).desc())
        .with_for_update()
    )
    return (await session.exec(stmt)).first()


async def awaits_repetition(session: AsyncSession, invite_id: str, since: datetime) -> bool:
    """Whether a live worker the invite registered since `since` never used its key (`unseen_registration`
    for any public key): the registrant may still repeat its registration."""
    stmt = select(Worker.id).where(
        col(Worker.invite_id) == invite_id,
        col(Worker.key_nonce).is_not(None),
        col(Worker.last_seen).is_(None),
        col(Worker.created_at) >= since,
        col(Worker.revoked_at).is_(None),
    )
    return (await session.exec(stmt.limit(1))).first() is not None


async def not_live_workers(session: AsyncSession, worker_ids: list[str]) -> list[str]:
    """Those of `worker_ids` that are removed or unknown (the callout cuts their bus connections)."""
    stmt = select(Worker.id).where(col(Worker.id).in_(worker_ids), col(Worker.revoked_at).is_(None))
    live = set((await session.exec(stmt)).all())
    return [worker_id for worker_id in worker_ids if worker_id not in live]


async def active_worker_by_key(session: AsyncSession, key_hash: str) -> Worker | None:
    stmt = select(Worker).where(Worker.key_hash == key_hash, col(Worker.revoked_at).is_(None))
    return (await session.exec(stmt)).first()


async def org_worker(session: AsyncSession, org_id: str, worker_id: str) -> Worker | None:
    """One of the organization's own live workers, locked (a platform worker is nobody's to manage here)."""
    stmt = (
        select(Worker)
        .where(col(Worker.id) == worker_id, col(Worker.org_id) == org_id, col(Worker.revoked_at).is_(None))
        .with_for_update()
    )
    return (await session.exec(stmt)).first()


async def record_heartbeat(
    session: AsyncSession, key_hash: str, *, now: datetime, busy: bool, running_tasks: int, slots: int
) -> Any | None:
    """The beat in one statement; returns the worker's row with its presence *before* the beat
    (`was`), so the caller knows a worker that was offline came back. The sub-select locks the row, so two
    beats (or a beat and the offline sweep) take turns and only one of them sees the change."""
    before = (
        select(col(Worker.id).label("id"), col(Worker.presence).label("was"))
        .where(col(Worker.key_hash) == key_hash, col(Worker.revoked_at).is_(None))
        .with_for_update()
        .subquery()
    )
    stmt = (
        update(Worker)
        .where(col(Worker.id) == before.c.id)
        .values(
            last_seen=now,
            key_nonce=None,
            busy=busy,
            running_tasks=running_tasks,
            slots=slots,
            presence="online",
            presence_seq=case(
                (before.c.was == "offline", col(Worker.presence_seq) + 1), else_=col(Worker.presence_seq)
            ),
        )
        .returning(
            col(Worker.id),
            before.c.was,
            col(Worker.presence_seq),
            col(Worker.org_id),
            col(Worker.name),
            col(Worker.pool_name),
            col(Worker.drain_requested_at),
        )
    )
    return (await session.exec(stmt)).first()


async def sweep_offline(session: AsyncSession, cutoff: datetime, limit: int) -> list[Worker]:
    """Marks offline the live workers whose presence says online but whose last beat is older than `cutoff`
    (up to `limit`), and returns them. Rows a heartbeat holds are skipped (it is making them current); a
    replica sweeping at the same time locks other rows, so each change is seen by one sweep only."""
    stale = (
        select(col(Worker.id))
        .where(
            col(Worker.presence) == "online",
            col(Worker.revoked_at).is_(None),
            or_(col(Worker.last_seen).is_(None), col(Worker.last_seen) < cutoff),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Worker)
        .where(col(Worker.id).in_(stale.scalar_subquery()))
        .values(presence="offline", presence_seq=col(Worker.presence_seq) + 1)
        .returning(Worker)
    )
    return list((await session.exec(stmt)).scalars().all())


async def count_online(session: AsyncSession, cutoff: datetime) -> int:
    """Live workers whose presence is online and whose last beat is not older than `cutoff`, remote ones
    included (their beats come through the same heartbeat)."""
    stmt = select_columns(func.count()).where(
        col(Worker.presence) == "online",
        col(Worker.revoked_at).is_(None),
        col(Worker.last_seen) >= cutoff,
    )
    return int((await session.execute(stmt)).scalar_one())


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


async def pool_members(session: AsyncSession) -> list[Any]:
    """(org_id, pool, pool_name, tags, last_seen, presence) of every live worker: the pool registry's input."""
    stmt = select_columns(
        col(Worker.org_id),
        col(Worker.pool),
        col(Worker.pool_name),
        col(Worker.tags),
        col(Worker.last_seen),
        col(Worker.presence),
    ).where(col(Worker.revoked_at).is_(None))
    return list((await session.execute(stmt)).all())


async def purge_org(session: AsyncSession, org_id: str) -> dict[str, int]:
    """Every row of the organization, from every table with an `org_id` (rows removed per table)."""
    return await delete_org_rows(session, WorkersBase.metadata, org_id)
