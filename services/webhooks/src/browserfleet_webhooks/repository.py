"""Every query of the webhooks service. Org-scoped reads always filter by org_id."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from browserfleet_core.db import new_id
from sqlalchemy import String, any_, bindparam, delete, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from .models import DUE_STATES, PENDING, WebhookAttempt, WebhookDelivery, WebhookEndpoint

# --- endpoints ------------------------------------------------------------------------------------


async def add_endpoint(session: AsyncSession, endpoint: WebhookEndpoint) -> None:
    session.add(endpoint)
    await session.flush()


async def list_endpoints(session: AsyncSession, org_id: str) -> Sequence[WebhookEndpoint]:
    stmt = (
        select(WebhookEndpoint)
        .where(col(WebhookEndpoint.org_id) == org_id)
        .order_by(col(WebhookEndpoint.created_at), col(WebhookEndpoint.id))
    )
    return (await session.exec(stmt)).all()


async def get_endpoint(session: AsyncSession, org_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    stmt = select(WebhookEndpoint).where(
        col(WebhookEndpoint.org_id) == org_id, col(WebhookEndpoint.id) == endpoint_id
    )
    return (await session.exec(stmt)).one_or_none()


async def delete_endpoint(session: AsyncSession, org_id: str, endpoint_id: str) -> bool:
    stmt = delete(WebhookEndpoint).where(
        col(WebhookEndpoint.org_id) == org_id, col(WebhookEndpoint.id) == endpoint_id
    )
    result = await session.exec(stmt)
    return bool(result.rowcount)


@dataclass(frozen=True)
class EndpointFilter:
    """An enabled endpoint and the event filters it subscribed to."""

    id: str
    org_id: str
    events: list[str]


# built once: composing the statement per batch cost more CPU than running it
_ENDPOINTS_FOR_EVENTS = select(
    col(WebhookEndpoint.id), col(WebhookEndpoint.org_id), col(WebhookEndpoint.events)
).where(
    col(WebhookEndpoint.org_id) == any_(bindparam("org_ids", type_=ARRAY(String))),
    col(WebhookEndpoint.enabled).is_(True),
    col(WebhookEndpoint.events).op("?|")(bindparam("filters", type_=ARRAY(String))),
)


async def endpoints_for_events(
    session: AsyncSession, org_ids: Collection[str], filters: Collection[str]
) -> list[EndpointFilter]:
    """One query for a batch of events: the enabled endpoints of `org_ids` whose filter list contains any
    of `filters`. A superset: the caller pairs each event with its own org's endpoints and its own filters."""
    if not org_ids or not filters:
        return []
    params = {"org_ids": sorted(org_ids), "filters": sorted(filters)}
    rows = (await session.exec(_ENDPOINTS_FOR_EVENTS, params=params)).all()
    return [EndpointFilter(id=r[0], org_id=r[1], events=list(r[2])) for r in rows]


# --- deliveries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewDelivery:
    endpoint_id: str
    org_id: str
    event_id: str
    event_type: str
    payload: bytes


INSERT_CHUNK = 500  # rows per INSERT statement (11 parameters each, well under PostgreSQL's 65,535)


async def insert_deliveries(
    session: AsyncSession, deliveries: Sequence[NewDelivery], *, now: datetime
) -> int:
    """Insert pending deliveries due now, skipping every (endpoint, event) that already has one (the
    unique key uq_webhook_deliveries_endpoint_event). Returns how many were new."""
    created = 0
    for start in range(0, len(deliveries), INSERT_CHUNK):
        rows = [
            {
                "id": new_id(),
                "endpoint_id": d.endpoint_id,
                "org_id": d.org_id,
                "event_id": d.event_id,
                "event_type": d.event_type,
                "payload": d.payload,
                "status": PENDING,
                "attempt": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for d in deliveries[start : start + INSERT_CHUNK]
        ]
        stmt = (
            insert(WebhookDelivery)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
            .returning(col(WebhookDelivery.id))
        )
        created += len((await session.exec(stmt)).all())
    return created


async def list_deliveries(
    session: AsyncSession, org_id: str, *, endpoint_id: str | None, limit: int
) -> Sequence[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(col(WebhookDelivery.org_id) == org_id)
    if endpoint_id is not None:
        stmt = stmt.where(col(WebhookDelivery.endpoint_id) == endpoint_id)
    stmt = stmt.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id)).limit(limit)
    return (await session.exec(stmt)).all()


@dataclass(frozen=True)
class Claimed:
    """A delivery this replica owns until `lease_until`; `attempt` is the number of this attempt."""

    id: str
    event_id: str
    attempt: int
    payload: bytes
    url: str
    secret: str


async def claim_due(
    session: AsyncSession, *, now: datetime, lease_until: datetime, limit: int
) -> list[Claimed]:
    """Take up to `limit` due deliveries and push their due time to `lease_until`.

    SKIP LOCKED lets replicas claim concurrently without waiting on or double-taking each other's rows;
    the lease means a replica that dies mid-request only delays the delivery until the lease ends.
    """
    due = (
        select(col(WebhookDelivery.id))
        .join(WebhookEndpoint, col(WebhookEndpoint.id) == col(WebhookDelivery.endpoint_id))
        .where(
            col(WebhookDelivery.status).in_(DUE_STATES),
            col(WebhookDelivery.next_attempt_at) <= now,
            col(WebhookEndpoint.enabled).is_(True),
        )
        .order_by(col(WebhookDelivery.next_attempt_at))
        .limit(limit)
        .with_for_update(skip_locked=True, of=WebhookDelivery)
        .scalar_subquery()
    )
    stmt = (
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id).in_(due))
        .values(attempt=col(WebhookDelivery.attempt) + 1, next_attempt_at=lease_until, updated_at=now)
        .returning(
            col(WebhookDelivery.id),
            col(WebhookDelivery.endpoint_id),
            col(WebhookDelivery.event_id),
            col(WebhookDelivery.attempt),
            col(WebhookDelivery.payload),
        )
    )
    rows = (await session.exec(stmt)).all()
    if not rows:
        return []
    endpoints = {
        e.id: e
        for e in (
            await session.exec(
                select(WebhookEndpoint).where(col(WebhookEndpoint.id).in_({r.endpoint_id for r in rows}))
            )
        )
    }
    return [
        Claimed(
            id=r.id,
            event_id=r.event_id,
            attempt=r.attempt,
            payload=r.payload,
            url=endpoints[r.endpoint_id].url,
            secret=endpoints[r.endpoint_id].secret,
        )
        for r in rows
    ]


async def record_attempt(
    session: AsyncSession,
    *,
    delivery_id: str,
    attempt: int,
    status: str,
    status_code: int | None,
    latency_ms: float | None,
    error: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> bool:
    """Store one attempt's outcome. False (and nothing written) when the claim was lost meanwhile:
    the lease ran out and another replica took a later attempt, or the endpoint was deleted."""
    stmt = (
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.attempt) == attempt)
        .values(
            status=status,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            next_attempt_at=next_attempt_at,
            updated_at=now,
        )
        .returning(col(WebhookDelivery.id))
    )
    if (await session.exec(stmt)).one_or_none() is None:
        return False
    await session.exec(
        insert(WebhookAttempt)
        .values(
            delivery_id=delivery_id,
            attempt=attempt,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            at=now,
        )
        .on_conflict_do_nothing(index_elements=["delivery_id", "attempt"])
    )
    return True


async def list_attempts(session: AsyncSession, delivery_id: str) -> Sequence[WebhookAttempt]:
    stmt = (
        select(WebhookAttempt)
        .where(col(WebhookAttempt.delivery_id) == delivery_id)
        .order_by(col(WebhookAttempt.attempt))
    )
    return (await session.exec(stmt)).all()
