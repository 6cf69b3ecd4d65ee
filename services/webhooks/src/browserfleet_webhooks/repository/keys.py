"""Signing keys (sealed secrets): an endpoint's, or the organization's for tasks' `webhook_url`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from browserfleet_core.db import AsyncSession
from sqlalchemy import delete, func, or_, text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select

from ..models import WebhookSigningKey


def _owner(org_id: str, endpoint_id: str | None) -> list[object]:
    k = WebhookSigningKey
    if endpoint_id is None:
        return [col(k.org_id) == org_id, col(k.endpoint_id).is_(None)]
    return [col(k.org_id) == org_id, col(k.endpoint_id) == endpoint_id]


async def lock_owner(session: AsyncSession, org_id: str, endpoint_id: str | None) -> None:
    """Serialise rotations of one owner's keys (an advisory lock until the transaction ends): the org key has
    no parent row to lock, and two rotations must not both see "no overlap"."""
    owner = f"webhook-keys:{org_id}:{endpoint_id or ''}"
    await session.exec(select(func.pg_advisory_xact_lock(func.hashtext(owner))))


async def keys_of(session: AsyncSession, org_id: str, endpoint_id: str | None) -> Sequence[WebhookSigningKey]:
    """Every key of one owner, newest first."""
    stmt = (
        select(WebhookSigningKey)
        .where(*_owner(org_id, endpoint_id))  # type: ignore[arg-type]
        .order_by(col(WebhookSigningKey.created_at).desc(), col(WebhookSigningKey.id))
    )
    return (await session.exec(stmt)).all()


async def current_key(
    session: AsyncSession, org_id: str, endpoint_id: str | None
) -> WebhookSigningKey | None:
    stmt = select(WebhookSigningKey).where(
        *_owner(org_id, endpoint_id),  # type: ignore[arg-type]
        col(WebhookSigningKey.expires_at).is_(None),
    )
    return (await session.exec(stmt)).one_or_none()


async def insert_org_key_if_missing(
    session: AsyncSession, org_id: str, sealed: bytes, key_version: int, key_id: str, *, now: datetime
) -> bool:
    """The organization's first key, unless it has one (a concurrent first use made it): True if inserted."""
    stmt = (
        insert(WebhookSigningKey)
        .values(
            id=key_id,
            org_id=org_id,
            endpoint_id=None,
            sealed=sealed,
            key_version=key_version,
            created_at=now,
            expires_at=None,
        )
        .on_conflict_do_nothing(
            index_elements=["org_id"], index_where=text("expires_at IS NULL AND endpoint_id IS NULL")
        )
        .returning(col(WebhookSigningKey.id))
    )
    return (await session.exec(stmt)).one_or_none() is not None


async def delete_expired_keys(
    session: AsyncSession, org_id: str, endpoint_id: str | None, *, now: datetime
) -> None:
    k = WebhookSigningKey
    await session.exec(
        delete(k).where(
            *_owner(org_id, endpoint_id),  # type: ignore[arg-type]
            col(k.expires_at).is_not(None),
            col(k.expires_at) <= now,
        )
    )


async def live_keys(
    session: AsyncSession, *, endpoint_ids: Collection[str], org_ids: Collection[str], now: datetime
) -> Sequence[WebhookSigningKey]:
    """The keys that sign a delivery now (current, and previous ones still in their overlap) of these
    endpoints and of these organizations (their own keys, for `task_url` endpoints), newest first."""
    if not endpoint_ids and not org_ids:
        return []
    k = WebhookSigningKey
    owners: list[Any] = []
    if endpoint_ids:
        owners.append(col(k.endpoint_id).in_(sorted(endpoint_ids)))
    if org_ids:
        owners.append(col(k.endpoint_id).is_(None) & col(k.org_id).in_(sorted(org_ids)))
    stmt = (
        select(k)
        .where(or_(*owners), or_(col(k.expires_at).is_(None), col(k.expires_at) > now))
        .order_by(col(k.created_at).desc(), col(k.id))
    )
    return (await session.exec(stmt)).all()
