"""Events to deliveries: one pending delivery per (event, endpoint of the event's org subscribed to its type),
plus one to the task's own `webhook_url` for a task event that names one.

The body is the seed's shape, `{"event", "timestamp", "data"}`, with `type` beside `event` (the Standard
Webhooks payload field): the exact bytes stored here are signed and sent on every attempt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from browserfleet_contracts.catalog import WEBHOOK_TYPES, entity, filters_selecting, webhook_selects
from browserfleet_contracts.events import EventEnvelope
from browserfleet_core.db import AsyncSession, Database

from . import repository, schedule, signing_keys
from .crypto import SecretBox
from .repository.takers import TakerCheck


def webhook_body(event_type: str, occurred_at: datetime, data: object) -> bytes:
    timestamp = occurred_at.isoformat().replace("+00:00", "Z")
    body = {"event": event_type, "type": event_type, "timestamp": timestamp, "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def event_body(event: EventEnvelope) -> bytes:
    dumped = event.model_dump(mode="json", include={"data", "occurred_at"})
    return webhook_body(event.type.value, event.occurred_at, dumped["data"])


def _task_url(event: EventEnvelope) -> str | None:
    """The task's own URL, for a deliverable task event that carries one."""
    if event.webhook_url and entity(event.type.value) == "task" and event.type.value in WEBHOOK_TYPES:
        return event.webhook_url
    return None


async def anything_to_deliver(db: Database, events: Sequence[EventEnvelope]) -> bool:
    """Whether `record_events` could make a delivery of this batch: a task event naming its own URL, or an
    enabled endpoint of an event's org subscribed to its type. Asked in one statement without a
    transaction, so a batch nobody subscribed to (most of them) costs one round trip and writes nothing;
    a batch with a taker is then recorded in a transaction exactly as before."""
    if any(_task_url(e) is not None for e in events):
        return True
    filters = {f for e in events for f in filters_selecting(e.type.value)}
    return await TakerCheck.of(db).any_endpoint({e.org_id for e in events}, filters)


async def record_events(
    session: AsyncSession,
    events: Sequence[EventEnvelope],
    *,
    box: SecretBox,
    schedule_delays: Sequence[float],
    now: datetime,
) -> int:
    """The deliveries of a whole batch, in a few statements: one query for the matching endpoints, one upsert
    for the implicit endpoints of task URLs, one INSERT. A redelivered event, or the same event twice in a
    batch, adds nothing. Returns the number of new deliveries."""
    if not events:
        return 0
    wanted = {event.type.value: set(filters_selecting(event.type.value)) for event in events}
    filters = set().union(*wanted.values())
    matches = await repository.endpoints_for_events(session, {e.org_id for e in events}, filters)
    by_org: dict[str, list[repository.EndpointFilter]] = {}
    for endpoint in matches:
        by_org.setdefault(endpoint.org_id, []).append(endpoint)
    task_urls = {(e.org_id, url) for e in events if (url := _task_url(e)) is not None}
    implicit = await repository.ensure_task_url_endpoints(session, task_urls, now=now)
    for org_id in sorted({org_id for org_id, _ in implicit}):
        await signing_keys.ensure_org_key(session, box, org_id, now)

    rows: dict[tuple[str, str], repository.NewDelivery] = {}
    for event in events:
        body: bytes | None = None
        targets = [
            endpoint.id
            for endpoint in by_org.get(event.org_id, ())
            if any(webhook_selects(f, event.type.value) for f in endpoint.events)
        ]
        url = _task_url(event)
        if url is not None:
            endpoint_id, enabled = implicit[event.org_id, url]
            if enabled:  # a disabled one takes no new deliveries, like any endpoint
                targets.append(endpoint_id)
        for endpoint_id in targets:
            if (endpoint_id, event.id) in rows:
                continue
            body = body or event_body(event)
            rows[endpoint_id, event.id] = repository.NewDelivery(
                endpoint_id=endpoint_id,
                org_id=event.org_id,
                event_id=event.id,
                event_type=event.type.value,
                payload=body,
            )
    if not rows:
        return 0
    created = await repository.insert_deliveries(
        session,
        list(rows.values()),
        now=now,
        first_attempt_at=schedule.first_attempt_at(schedule_delays, now),
    )
    return len(created)
