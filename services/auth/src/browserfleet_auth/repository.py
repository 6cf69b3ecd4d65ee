"""Every query of the auth service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import case, delete, func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .models import ApiKey, AuditLog, LoginThrottle, Organization, RefreshSession, SigningKey, User


async def advisory_xact_lock(session: AsyncSession, name: str) -> None:
    """Serialise a check-then-insert across replicas until the surrounding transaction ends."""
    await session.exec(select(func.pg_advisory_xact_lock(func.hashtext(name))))


Row = Organization | User | RefreshSession | SigningKey | ApiKey | AuditLog | LoginThrottle


async def add(session: AsyncSession, *rows: Row) -> None:
    session.add_all(rows)
    await session.flush()


# --- organizations ---------------------------------------------------------------------------------
async def get_organization(session: AsyncSession, org_id: str) -> Organization | None:
    return await session.get(Organization, org_id)


async def first_organization(session: AsyncSession) -> Organization | None:
    stmt = select(Organization).order_by(col(Organization.created_at), col(Organization.id)).limit(1)
    return (await session.exec(stmt)).first()


async def slug_taken(session: AsyncSession, slug: str) -> bool:
    stmt = select(Organization.id).where(Organization.slug == slug)
    return (await session.exec(stmt)).first() is not None


# --- users -----------------------------------------------------------------------------------------
async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.exec(select(User).where(User.email == email))).first()


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def get_org_user(session: AsyncSession, org_id: str, user_id: str) -> User | None:
    stmt = select(User).where(User.id == user_id, User.org_id == org_id)
    return (await session.exec(stmt)).first()


async def first_admin(session: AsyncSession, org_id: str) -> User | None:
    stmt = (
        select(User)
        .where(User.org_id == org_id, User.role == "admin")
        .order_by(col(User.created_at), col(User.id))
        .limit(1)
    )
    return (await session.exec(stmt)).first()


# --- refresh sessions ------------------------------------------------------------------------------
async def get_refresh_session_for_update(session: AsyncSession, token_hash: str) -> RefreshSession | None:
    """Row-locked, so two concurrent uses of one token are serialised and the second sees it spent."""
    stmt = select(RefreshSession).where(RefreshSession.token_hash == token_hash).with_for_update()
    return (await session.exec(stmt)).first()


async def get_refresh_session(session: AsyncSession, token_hash: str) -> RefreshSession | None:
    return (await session.exec(select(RefreshSession).where(RefreshSession.token_hash == token_hash))).first()


async def revoke_family(session: AsyncSession, family_id: str, now: datetime) -> int:
    stmt = (
        update(RefreshSession)
        .where(col(RefreshSession.family_id) == family_id, col(RefreshSession.revoked_at).is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session="fetch")
    )
    result = await session.exec(stmt)
    return int(result.rowcount or 0)


async def family_sessions(session: AsyncSession, family_id: str) -> Sequence[RefreshSession]:
    stmt = (
        select(RefreshSession)
        .where(RefreshSession.family_id == family_id)
        .order_by(col(RefreshSession.created_at))
    )
    return (await session.exec(stmt)).all()


# --- signing keys ----------------------------------------------------------------------------------
async def current_signing_key(session: AsyncSession) -> SigningKey | None:
    stmt = (
        select(SigningKey)
        .where(col(SigningKey.retired_at).is_(None))
        .order_by(col(SigningKey.created_at).desc(), col(SigningKey.kid))
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def published_signing_keys(session: AsyncSession, retired_after: datetime) -> Sequence[SigningKey]:
    """Active keys, and retired ones that may still have signed an unexpired token."""
    stmt = (
        select(SigningKey)
        .where(or_(col(SigningKey.retired_at).is_(None), col(SigningKey.retired_at) > retired_after))
        .order_by(col(SigningKey.created_at).desc())
    )
    return (await session.exec(stmt)).all()


async def retire_signing_keys(session: AsyncSession, now: datetime) -> None:
    stmt = (
        update(SigningKey)
        .where(col(SigningKey.retired_at).is_(None))
        .values(retired_at=now)
        .execution_options(synchronize_session="fetch")
    )
    await session.exec(stmt)


async def list_organizations(session: AsyncSession) -> Sequence[Organization]:
    stmt = select(Organization).order_by(col(Organization.created_at), col(Organization.id))
    return (await session.exec(stmt)).all()


async def get_organization_by_slug(session: AsyncSession, slug: str) -> Organization | None:
    return (await session.exec(select(Organization).where(Organization.slug == slug))).first()


async def delete_organization(session: AsyncSession, org_id: str) -> None:
    """Users, their sessions and the org's API keys go with it (ON DELETE CASCADE)."""
    await session.exec(delete(Organization).where(col(Organization.id) == org_id))


async def org_users(session: AsyncSession, org_id: str) -> Sequence[User]:
    stmt = select(User).where(User.org_id == org_id).order_by(col(User.created_at), col(User.id))
    return (await session.exec(stmt)).all()


async def revoke_user_sessions(session: AsyncSession, user_id: str, now: datetime) -> int:
    stmt = (
        update(RefreshSession)
        .where(col(RefreshSession.user_id) == user_id, col(RefreshSession.revoked_at).is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session="fetch")
    )
    result = await session.exec(stmt)
    return int(result.rowcount or 0)


# --- API keys --------------------------------------------------------------------------------------
async def get_api_key_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    return (await session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash))).first()


async def get_org_api_key(session: AsyncSession, org_id: str, key_id: str) -> ApiKey | None:
    stmt = select(ApiKey).where(ApiKey.id == key_id, ApiKey.org_id == org_id)
    return (await session.exec(stmt)).first()


async def org_api_keys(session: AsyncSession, org_id: str) -> Sequence[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.org_id == org_id).order_by(col(ApiKey.created_at), col(ApiKey.id))
    return (await session.exec(stmt)).all()


async def touch_api_key(session: AsyncSession, key_id: str, now: datetime) -> None:
    stmt = (
        update(ApiKey)
        .where(col(ApiKey.id) == key_id)
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.exec(stmt)


# --- audit log -------------------------------------------------------------------------------------
async def list_audit(
    session: AsyncSession,
    org_id: str,
    *,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    before_id: int | None,
    limit: int,
) -> Sequence[AuditLog]:
    """Newest first; `before_id` is the keyset cursor."""
    stmt = select(AuditLog).where(AuditLog.org_id == org_id)
    if action:
        stmt = stmt.where(AuditLog.action == action)
    if since is not None:
        stmt = stmt.where(col(AuditLog.at) >= since)
    if until is not None:
        stmt = stmt.where(col(AuditLog.at) < until)
    if before_id is not None:
        stmt = stmt.where(col(AuditLog.id) < before_id)
    stmt = stmt.order_by(col(AuditLog.id).desc()).limit(limit)
    return (await session.exec(stmt)).all()


# --- login throttle --------------------------------------------------------------------------------
async def get_throttles_for_update(session: AsyncSession, keys: list[str]) -> dict[str, LoginThrottle]:
    stmt = (
        select(LoginThrottle)
        .where(col(LoginThrottle.key).in_(keys))
        .with_for_update()
        .execution_options(populate_existing=True)  # counters are bumped by upserts, not through the ORM
    )
    return {row.key: row for row in (await session.exec(stmt)).all()}


async def clear_throttle(session: AsyncSession, key: str) -> None:
    await session.exec(delete(LoginThrottle).where(col(LoginThrottle.key) == key))


async def add_login_failure(
    session: AsyncSession,
    key: str,
    now: datetime,
    *,
    window_start: datetime,
    lock_after: int,
    locked_until: datetime,
) -> None:
    """One more failure for `key` (a fresh count once the last failure left the window); locks the key when
    the count reaches `lock_after`. An upsert, so concurrent first failures on two replicas both count."""
    from sqlalchemy.dialects.postgresql import insert

    t = LoginThrottle.__table__  # type: ignore[attr-defined]
    failures = case((t.c.last_failure_at < window_start, 1), else_=t.c.failures + 1)
    stmt = (
        insert(t)
        .values(key=key, failures=1, last_failure_at=now, locked_until=None)
        .on_conflict_do_update(
            index_elements=["key"],
            set_={
                "failures": failures,
                "last_failure_at": now,
                "locked_until": case((failures >= lock_after, locked_until), else_=t.c.locked_until),
            },
        )
    )
    await session.exec(stmt)
