"""Every query of the auth service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .models import Organization, RefreshSession, SigningKey, User


async def advisory_xact_lock(session: AsyncSession, name: str) -> None:
    """Serialise a check-then-insert across replicas until the surrounding transaction ends."""
    await session.exec(select(func.pg_advisory_xact_lock(func.hashtext(name))))


async def add(session: AsyncSession, *rows: Organization | User | RefreshSession | SigningKey) -> None:
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
