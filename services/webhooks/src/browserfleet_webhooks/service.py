"""Webhooks logic: endpoints, turning events into deliveries, and the retry schedule.

Takes a session and plain values; never commits (the caller's `Database.transaction()` does).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from browserfleet_contracts.common import Actor
from browserfleet_contracts.events import EventEnvelope
from browserfleet_contracts.webhooks import (
    WebhookDeliveryPublic,
    WebhookEndpointCreate,
    WebhookEndpointPublic,
)
from browserfleet_core.db import utcnow
from browserfleet_core.errors import Forbidden, Invalid, NotFound
from sqlmodel.ext.asyncio.session import AsyncSession

from . import repository, signing, targets
from .models import DEAD, FAILED, SUCCEEDED, WebhookDelivery, WebhookEndpoint

MAX_ERROR_CHARS = 500


def _require_admin(actor: Actor) -> None:
    if actor.role != "admin":
        raise Forbidden("only an org admin can manage webhook endpoints", code="forbidden")


def endpoint_public(endpoint: WebhookEndpoint, *, secret: str | None = None) -> WebhookEndpointPublic:
    return WebhookEndpointPublic(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events),
        description=endpoint.description,
        enabled=endpoint.enabled,
        created_at=endpoint.created_at,
        secret=secret,
    )


def delivery_public(d: WebhookDelivery) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(
        id=d.id,
        endpoint_id=d.endpoint_id,
        event_id=d.event_id,
        event_type=d.event_type,
        attempt=d.attempt,
        status=d.status,
        status_code=d.status_code,
        latency_ms=d.latency_ms,
        error=d.error,
        created_at=d.created_at,
        next_attempt_at=d.next_attempt_at if d.status not in (SUCCEEDED, DEAD) else None,
    )


# --- endpoints ------------------------------------------------------------------------------------


async def create_endpoint(
    session: AsyncSession, actor: Actor, data: WebhookEndpointCreate, *, allow_private: bool
) -> WebhookEndpointPublic:
    """Register an endpoint; the reply is the only time its secret is ever shown."""
    _require_admin(actor)
    url = str(data.url)
    try:
        await targets.check(url, allow_private=allow_private)
    except targets.TargetRefused as exc:
        raise Invalid(f"endpoint.url: {exc}", field="endpoint.url") from None
    secret = signing.generate_secret()
    endpoint = WebhookEndpoint(
        org_id=actor.org_id,
        url=url,
        events=list(data.events),
        description=data.description,
        secret=secret,
        created_by=actor.user_id or actor.api_key_id,
    )
    await repository.add_endpoint(session, endpoint)
    return endpoint_public(endpoint, secret=secret)


async def list_endpoints(session: AsyncSession, actor: Actor) -> list[WebhookEndpointPublic]:
    return [endpoint_public(e) for e in await repository.list_endpoints(session, actor.org_id)]


async def delete_endpoint(session: AsyncSession, actor: Actor, endpoint_id: str) -> None:
    """Delete an endpoint with its delivery log; deliveries still queued for it are never sent."""
    _require_admin(actor)
    if not await repository.delete_endpoint(session, actor.org_id, endpoint_id):
        raise NotFound("webhook endpoint not found", field="id")


async def list_deliveries(
    session: AsyncSession, actor: Actor, *, endpoint_id: str | None, limit: int
) -> list[WebhookDeliveryPublic]:
    if endpoint_id is not None and await repository.get_endpoint(session, actor.org_id, endpoint_id) is None:
        raise NotFound("webhook endpoint not found", field="endpoint_id")
    rows = await repository.list_deliveries(session, actor.org_id, endpoint_id=endpoint_id, limit=limit)
    return [delivery_public(d) for d in rows]


# --- events -> deliveries -------------------------------------------------------------------------


def filters_for(event_type: str) -> list[str]:
    """The endpoint filters that select `event_type`: itself, `<entity>.*` and `*`."""
    entity = event_type.split(".", 1)[0]
    return sorted({event_type, f"{entity}.*", "*"})


def webhook_body(event: EventEnvelope) -> bytes:
    dumped = event.model_dump(mode="json")
    body = {"type": event.type, "timestamp": dumped["occurred_at"], "data": dumped["data"]}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


async def record_events(session: AsyncSession, events: Sequence[EventEnvelope]) -> int:
    """One pending delivery per (event, endpoint of the event's org subscribed to its type), for a whole
    batch in two statements: one query for the endpoints, one INSERT. A redelivered event, or the same
    event twice in a batch, adds nothing. Returns the number of new deliveries."""
    if not events:
        return 0
    wanted = {event.type: set(filters_for(event.type)) for event in events}
    endpoints = await repository.endpoints_for_events(
        session, {event.org_id for event in events}, set().union(*wanted.values())
    )
    if not endpoints:
        return 0
    by_org: dict[str, list[repository.EndpointFilter]] = {}
    for endpoint in endpoints:
        by_org.setdefault(endpoint.org_id, []).append(endpoint)
    rows: dict[tuple[str, str], repository.NewDelivery] = {}
    for event in events:
        body: bytes | None = None
        for endpoint in by_org.get(event.org_id, ()):
            if (endpoint.id, event.id) in rows or wanted[event.type].isdisjoint(endpoint.events):
                continue
            body = body or webhook_body(event)
            rows[endpoint.id, event.id] = repository.NewDelivery(
                endpoint_id=endpoint.id,
                org_id=event.org_id,
                event_id=event.id,
                event_type=event.type,
                payload=body,
            )
    if not rows:
        return 0
    return await repository.insert_deliveries(session, list(rows.values()), now=utcnow())


# --- retry schedule -------------------------------------------------------------------------------


def backoff_seconds(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay after failed attempt number `attempt` (1-based): base * 2^(attempt-1), capped, with
    "equal jitter" (half fixed, half random) so endpoints that failed together do not retry together."""
    exponent = min(max(0, attempt - 1), 62)  # beyond this the cap has long won; keeps floats finite
    delay = min(cap, base * float(1 << exponent))
    r = rng or random
    return delay / 2 + r.uniform(0, delay / 2)


def outcome(
    *,
    attempt: int,
    status_code: int | None,
    max_attempts: int,
    base: float,
    cap: float,
    now: datetime,
) -> tuple[str, datetime | None]:
    """(status, next_attempt_at) after an attempt: 2xx succeeds; anything else retries until dead."""
    if status_code is not None and 200 <= status_code < 300:
        return SUCCEEDED, None
    if attempt >= max_attempts:
        return DEAD, None
    return FAILED, now + timedelta(seconds=backoff_seconds(attempt, base=base, cap=cap))


def clip_error(error: str | None) -> str | None:
    return None if error is None else error[:MAX_ERROR_CHARS]
