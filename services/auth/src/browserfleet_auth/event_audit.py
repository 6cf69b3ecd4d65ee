"""What other services announce on EVENTS that belongs in the organization's audit log: today the webhooks
service disabling an endpoint (`webhook.endpoint.disabled`: it answered 410 Gone, or failed every delivery for
the whole failure window). No one is emailed; the admins read it in `GET /admin/audit-log`.

A BatchConsumer (durable `auth-audit-events`) started once the EVENTS stream exists, not a subscriber of the
broker: the broker serves auth's requests even before any stream does. Each event is recorded once by its id
(a redelivered event finds its row and adds nothing); a malformed one is terminated.
"""

from __future__ import annotations

import functools
from typing import Final

from browserfleet_contracts import subjects
from browserfleet_contracts.events import EventEnvelope, EventType
from browserfleet_core.batching import (
    BatchConsumer,
    documentation_router,
    durable_config,
    parse_batch,
    record_each_or_all,
)
from browserfleet_core.db import AsyncSession
from faststream.nats import NatsRouter
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from . import audit
from . import repository as repo
from .runtime import AuthRuntime

DURABLE: Final = "auth-audit-events"
# the audit action each audited event type is recorded as
AUDITED: Final = {EventType.WEBHOOK_ENDPOINT_DISABLED: "webhook.endpoint_disabled"}
FILTER: Final = subjects.event("*", EventType.WEBHOOK_ENDPOINT_DISABLED)
CONFIG: Final = durable_config(DURABLE, FILTER, max_ack_pending=100)
RETRY_SECONDS: Final = 2.0


async def record(session: AsyncSession, events: list[EventEnvelope]) -> int:
    """One audit row per event not recorded before (its id is in the row's detail). Returns rows added."""
    added = 0
    for event in events:
        action = AUDITED.get(event.type)
        if action is None or await repo.audit_of_event(session, event.org_id, action, event.id):
            continue
        target = event.data.get("url") or event.data.get("endpoint_id")
        await audit.record(
            session,
            event.occurred_at,
            action,
            org_id=event.org_id,
            target=str(target) if target else None,
            detail={"event_id": event.id, **event.data},
        )
        added += 1
    return added


async def _on_events(rt: AuthRuntime, msgs: list[Msg]) -> None:
    async def in_transaction(events: list[EventEnvelope]) -> int:
        return await rt.db.run(record, events)

    parsed = await parse_batch(msgs, EventEnvelope)
    await record_each_or_all(parsed, in_transaction, nak_delay=RETRY_SECONDS, what="audited event")


def build_consumer(rt: AuthRuntime, nc: NatsClient) -> BatchConsumer:
    return BatchConsumer(
        nc,
        stream=subjects.EVENTS_STREAM,
        durable=DURABLE,
        config=CONFIG,
        handler=functools.partial(_on_events, rt),
        max_batch=16,
    )


def documentation() -> NatsRouter:
    """AsyncAPI only: the consumer is a BatchConsumer beside the broker, never one of its subscribers."""
    return documentation_router(
        FILTER,
        stream=subjects.EVENTS_STREAM,
        durable=DURABLE,
        payload=EventEnvelope,
        config=CONFIG,
        title=f"{DURABLE}.events",
        description="webhook.endpoint.disabled: written to the organization's audit log as "
        "`webhook.endpoint_disabled` (once per event id; the webhooks service disabled the endpoint).",
    )
