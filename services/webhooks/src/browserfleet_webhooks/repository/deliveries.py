"""Deliveries: insert, claim (with the circuit breaker), record an attempt, requeue (replay), read the log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from browserfleet_core.db import AsyncSession, new_id
from browserfleet_core.projection import attributes
from sqlalchemy import func, or_, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select

from ..models import (
    DUE_STATES,
    PENDING,
    REPLAYABLE_STATES,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from .rows import org_row, save


@dataclass(frozen=True)
class NewDelivery:
    endpoint_id: str
    org_id: str
    event_id: str
    event_type: str
    payload: bytes


INSERT_CHUNK = 500  # rows per INSERT statement (12 parameters each, well under PostgreSQL's 65,535)


async def insert_deliveries(
    session: AsyncSession, deliveries: Sequence[NewDelivery], *, now: datetime, first_attempt_at: datetime
) -> list[str]:
    """Insert pending deliveries, skipping every (endpoint, event) that already has one (the unique key
    uq_webhook_deliveries_endpoint_event). Returns the ids of the new ones."""
    created: list[str] = []
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
                "cycle_attempt": 0,
                "next_attempt_at": first_attempt_at,
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
        created.extend(str(r[0]) for r in (await session.exec(stmt)).all())
    return created


async def list_deliveries(
    session: AsyncSession, org_id: str, *, endpoint_id: str | None, status: str | None, limit: int
) -> Sequence[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(col(WebhookDelivery.org_id) == org_id)
    if endpoint_id is not None:
        stmt = stmt.where(col(WebhookDelivery.endpoint_id) == endpoint_id)
    if status is not None:
        stmt = stmt.where(col(WebhookDelivery.status) == status)
    stmt = stmt.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id)).limit(limit)
    return (await session.exec(stmt)).all()


async def get_delivery(
    session: AsyncSession, org_id: str, delivery_id: str, *, lock: bool = False
) -> WebhookDelivery | None:
    return await org_row(session, WebhookDelivery, org_id, delivery_id, lock=lock)


@dataclass(frozen=True)
class Claimed:
    """A delivery this replica owns until its lease ends; `attempt` is the number of this attempt (the log's),
    `cycle_attempt` its place in the current retry schedule."""

    id: str
    event_id: str
    attempt: int
    cycle_attempt: int
    payload: bytes
    endpoint_id: str
    org_id: str
    kind: str
    url: str


async def claim_due(
    session: AsyncSession,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
    circuit_failures: int,
) -> list[Claimed]:
    """Take up to `limit` due deliveries of enabled endpoints whose circuit lets them through, and push their
    due time to `lease_until`.

    SKIP LOCKED lets replicas claim concurrently without waiting on or double-taking each other's rows; the
    lease means a replica that dies mid-request only delays the delivery until the lease ends.

    An endpoint with `circuit_failures` failures in a row is half-open once its cool-down ended: it gets one
    delivery (the probe) and its circuit is held shut until the lease ends, so other replicas send it nothing
    meanwhile; the probe's outcome closes the circuit or opens it again. Nothing is dropped: deliveries held
    back simply stay due."""
    d, e = WebhookDelivery, WebhookEndpoint
    candidates = (
        await session.exec(
            select(col(d.id), col(d.endpoint_id), col(e.consecutive_failures))
            .join(e, col(e.id) == col(d.endpoint_id))
            .where(
                col(d.status).in_(DUE_STATES),
                col(d.next_attempt_at) <= now,
                col(e.enabled).is_(True),
                or_(col(e.circuit_open_until).is_(None), col(e.circuit_open_until) <= now),
            )
            .order_by(col(d.next_attempt_at))
            .limit(limit)
            .with_for_update(skip_locked=True, of=d)
        )
    ).all()
    if not candidates:
        return []
    chosen: list[str] = []
    probes: dict[str, str] = {}  # half-open endpoint -> its one probe delivery
    for delivery_id, endpoint_id, failures in candidates:
        if failures >= circuit_failures:
            probes.setdefault(endpoint_id, delivery_id)
        else:
            chosen.append(delivery_id)
    if probes:
        # the UPDATE's row lock makes a concurrent replica's same UPDATE wait and then find the circuit held
        held = (
            await session.exec(
                update(e)
                .where(
                    col(e.id).in_(sorted(probes)),
                    col(e.consecutive_failures) >= circuit_failures,
                    or_(col(e.circuit_open_until).is_(None), col(e.circuit_open_until) <= now),
                )
                .values(circuit_open_until=lease_until)
                .returning(col(e.id))
            )
        ).all()
        chosen.extend(probes[str(row[0])] for row in held)
    if not chosen:
        return []
    stmt = (
        update(d)
        .where(col(d.id).in_(chosen))
        .values(
            attempt=col(d.attempt) + 1,
            cycle_attempt=col(d.cycle_attempt) + 1,
            next_attempt_at=lease_until,
            updated_at=now,
        )
        .returning(
            col(d.id),
            col(d.endpoint_id),
            col(d.event_id),
            col(d.attempt),
            col(d.cycle_attempt),
            col(d.payload),
        )
    )
    rows = (await session.exec(stmt)).all()
    endpoints = {
        ep.id: ep
        for ep in await session.exec(
            select(WebhookEndpoint).where(col(e.id).in_({r.endpoint_id for r in rows}))
        )
    }
    return [
        Claimed(**r._asdict(), **attributes(endpoints[r.endpoint_id], "org_id", "kind", "url")) for r in rows
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
    response: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> bool:
    """Store one attempt's outcome. False (and nothing written) when the claim was lost meanwhile:
    the lease ran out and another replica took a later attempt, or the endpoint was deleted."""
    d = WebhookDelivery
    # the delivery row shows its last attempt's answer; the attempt log keeps each one's
    answer = {"status_code": status_code, "latency_ms": latency_ms, "error": error}
    stmt = (
        update(d)
        .where(col(d.id) == delivery_id, col(d.attempt) == attempt)
        .values(status=status, **answer, next_attempt_at=next_attempt_at, updated_at=now)
        .returning(col(d.id))
    )
    if (await session.exec(stmt)).one_or_none() is None:
        return False
    await session.exec(
        insert(WebhookAttempt)
        .values(delivery_id=delivery_id, attempt=attempt, **answer, response=response, at=now)
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


async def requeue(session: AsyncSession, delivery: WebhookDelivery, *, now: datetime) -> None:
    """Send a delivery again now, with a fresh retry schedule (a replay)."""
    delivery.status = PENDING
    delivery.cycle_attempt = 0
    delivery.next_attempt_at = now
    delivery.updated_at = now
    await save(session, delivery)


def _replayable(endpoint_id: str, since: datetime, until: datetime) -> list[object]:
    d = WebhookDelivery
    return [
        col(d.endpoint_id) == endpoint_id,
        col(d.status).in_(REPLAYABLE_STATES),
        col(d.created_at) >= since,
        col(d.created_at) <= until,
    ]


async def count_replayable(
    session: AsyncSession, endpoint_id: str, *, since: datetime, until: datetime
) -> int:
    stmt = select(func.count()).select_from(WebhookDelivery).where(*_replayable(endpoint_id, since, until))  # type: ignore[arg-type]
    return int((await session.exec(stmt)).one())


async def requeue_replayable(
    session: AsyncSession,
    endpoint_id: str,
    *,
    since: datetime,
    until: datetime,
    after_id: str | None,
    limit: int,
    now: datetime,
) -> tuple[int, str | None]:
    """One step of a bulk replay: the next `limit` failed deliveries (by id, after `after_id`) due again now
    with a fresh schedule. Returns (how many were requeued, the last id seen; None when none was left)."""
    d = WebhookDelivery
    conditions = _replayable(endpoint_id, since, until)
    if after_id is not None:
        conditions.append(col(d.id) > after_id)
    ids = (
        await session.exec(
            select(col(d.id)).where(*conditions).order_by(col(d.id)).limit(limit).with_for_update(of=d)  # type: ignore[arg-type]
        )
    ).all()
    if not ids:
        return 0, None
    result = await session.exec(
        update(d)
        .where(col(d.id).in_(ids))
        .values(status=PENDING, cycle_attempt=0, next_attempt_at=now, updated_at=now)
    )
    return int(result.rowcount or 0), ids[-1]
