"""Webhooks logic: endpoints, turning events into deliveries, and the retry schedule.

Takes a session and plain values; never commits (the caller's `Database.transaction()` does).
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

from browserfleet_contracts.common import Actor
from browserfleet_contracts.events import EventEnvelope
from browserfleet_contracts.webhooks import (
    WebhookDeliveryPublic,
    WebhookEndpointCreate,
    WebhookEndpointPublic,
)
from browserfleet_core.db import new_id, utcnow
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


async def record_event(session: AsyncSession, event: EventEnvelope) -> int:
    """One pending delivery per matching endpoint; a redelivered event adds nothing. Returns new rows."""
    endpoint_ids = await repository.matching_endpoints(session, event.org_id, filters_for(event.type))
    if not endpoint_ids:
        return 0
    body = webhook_body(event)
    now = utcnow()
    created = 0
    for endpoint_id in endpoint_ids:
        created += await repository.insert_delivery(
            session,
            delivery_id=new_id(),
            endpoint_id=endpoint_id,
            org_id=event.org_id,
            event_id=event.id,
            event_type=event.type,
            payload=body,
            now=now,
        )
    return created


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
