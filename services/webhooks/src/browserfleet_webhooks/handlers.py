"""NATS subjects served by the webhooks service: its request/reply commands (FastStream) and the EVENTS
consumer (a BatchConsumer: one transaction per batch of events). A command that makes something due (a test
event, a replay, an endpoint enabled again) wakes the dispatcher once its transaction committed."""

from __future__ import annotations

import functools
from typing import Any

from browserfleet_contracts import catalog, endpoints, subjects
from browserfleet_contracts.common import Ack, ById
from browserfleet_contracts.events import EventEnvelope
from browserfleet_core.batching import (
    BatchConsumer,
    documentation_router,
    durable_config,
    parse_batch,
    record_each_or_all,
)
from browserfleet_core.db import after_commit, utcnow
from browserfleet_core.messaging import rpc_router
from faststream.nats import NatsRouter
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import Histogram

from . import deliveries, intake, registry
from .dispatcher import DELIVERIES_CREATED
from .runtime import WebhooksRuntime

EVENTS_DURABLE = "webhooks"
EVENTS_CONSUMER = durable_config(EVENTS_DURABLE, subjects.EVENTS_ALL, max_ack_pending=1000)
# the consumer, as the BatchConsumer that runs it and the router that documents it both name it
EVENTS_SOURCE: dict[str, Any] = {
    "stream": subjects.EVENTS_STREAM,
    "durable": EVENTS_DURABLE,
    "config": EVENTS_CONSUMER,
}
# events per transaction at most; a batch holds one database connection
EVENTS_MAX_BATCH = 64
EVENTS_LINGER_SECONDS = 0.01
# a failed event is offered again after this long, rather than in a tight loop while Postgres is down
RETRY_EVENT_SECONDS = 2.0

EVENT_BATCH_SIZE = Histogram(
    "browserfleet_webhook_event_batch_size",
    "Events the webhooks service recorded per batch (one transaction each)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


def build_rpc_router(rt: WebhooksRuntime) -> NatsRouter:
    router = rpc_router()
    s = rt.settings
    breaker = {"circuit_failures": s.webhook_circuit_failures}
    # what an endpoint's URL may be (create, update), how long a rotated secret keeps signing
    writes: dict[str, Any] = {**breaker, "allow_private": s.webhook_allow_private_targets}
    overlap = {"overlap_seconds": s.webhook_secret_overlap_seconds}

    serve = router.serve
    hooks = endpoints.Webhooks
    serve(
        hooks.CREATE_ENDPOINT,
        lambda body: rt.db.run(registry.create_endpoint, rt.box, body.actor, body.endpoint, **writes),
    )
    serve(hooks.LIST_ENDPOINTS, lambda body: rt.db.run(registry.list_endpoints, body.actor, **breaker))
    serve(hooks.GET_ENDPOINT, lambda body: rt.db.run(registry.get_endpoint, body.actor, body.id, **breaker))
    serve(  # an endpoint enabled again sends what waited for it
        hooks.UPDATE_ENDPOINT,
        lambda body: rt.run_then_wake(registry.update_endpoint, body.actor, body.id, body.endpoint, **writes),
    )

    @router.handle(hooks.DELETE_ENDPOINT)
    async def delete_endpoint(body: ById) -> Ack:
        await rt.db.run(registry.delete_endpoint, body.actor, body.id)
        return Ack()

    serve(hooks.GET_SECRET, lambda body: rt.db.run(registry.get_secret, rt.box, body.actor, body.id))
    serve(
        hooks.ROTATE_SECRET,
        lambda body: rt.db.run(registry.rotate_secret, rt.box, body.actor, body.id, **overlap),
    )
    serve(hooks.GET_ORG_SECRET, lambda body: rt.db.run(registry.get_secret, rt.box, body.actor, None))
    serve(
        hooks.ROTATE_ORG_SECRET,
        lambda body: rt.db.run(registry.rotate_secret, rt.box, body.actor, None, **overlap),
    )
    serve(hooks.SEND_TEST, lambda body: rt.run_then_wake(deliveries.send_test, body.actor, body.id))
    serve(
        hooks.LIST_DELIVERIES,
        lambda body: rt.db.run(
            deliveries.list_deliveries,
            body.actor,
            endpoint_id=body.endpoint_id,
            status=body.status,
            limit=body.limit,
        ),
    )
    serve(hooks.GET_DELIVERY, lambda body: rt.db.run(deliveries.get_delivery, body.actor, body.id))
    serve(
        hooks.REPLAY_DELIVERY, lambda body: rt.run_then_wake(deliveries.replay_delivery, body.actor, body.id)
    )
    serve(  # the dispatcher's loop advances replay jobs
        hooks.REPLAY_FAILED,
        lambda body: rt.run_then_wake(deliveries.start_replay, body.actor, body.endpoint_id, body.replay),
    )
    serve(hooks.GET_REPLAY_JOB, lambda body: rt.db.run(deliveries.get_job, body.actor, body.id))

    return router


def build_events_consumer(rt: WebhooksRuntime, nc: NatsClient) -> BatchConsumer:
    """The EVENTS consumer: a BatchConsumer (not FastStream) so that one transaction records a batch."""
    return BatchConsumer(
        nc,
        **EVENTS_SOURCE,
        handler=functools.partial(on_events, rt),
        max_batch=EVENTS_MAX_BATCH,
        expires=5.0,
        # deliveries are retried on a schedule of seconds: 10 ms for more events to share a batch's
        # question and transaction (the edges helper: 0.339 -> 0.294 ms of CPU per event at 5 ms, 0.247 at 20)
        linger=EVENTS_LINGER_SECONDS,
    )


async def on_events(rt: WebhooksRuntime, msgs: list[Msg]) -> None:
    """Record a batch of domain events in one transaction, then let BatchConsumer ack them.

    A malformed message is terminated (it would never parse). When the batch's transaction fails, each
    event is recorded in a transaction of its own, so one event that cannot be recorded does not hold up
    the rest: it alone is nak'ed and offered again after RETRY_EVENT_SECONDS. Messages left unsettled here
    are acked by BatchConsumer when this returns (after the commit).
    """
    EVENT_BATCH_SIZE.observe(len(msgs))
    parsed = await parse_batch(msgs, EventEnvelope)
    await record_each_or_all(
        parsed, functools.partial(_record, rt), nak_delay=RETRY_EVENT_SECONDS, what="webhook event"
    )


async def _record(rt: WebhooksRuntime, events: list[EventEnvelope]) -> None:
    if not await intake.anything_to_deliver(rt.db, events):
        return  # no endpoint takes any of them: nothing to write, no transaction opened
    async with rt.db.transaction() as session:
        created = await intake.record_events(
            session, events, box=rt.box, schedule_delays=rt.settings.webhook_retry_schedule, now=utcnow()
        )
        if created:
            after_commit(session, rt.wake_dispatcher)
    if created:
        DELIVERIES_CREATED.inc(created)


def build_events_doc_router() -> NatsRouter:
    """Documentation only (AsyncAPI): the EVENTS consumer is a BatchConsumer, not a FastStream subscriber,
    so a broker built to describe the service declares it here. Never part of a running broker."""
    return documentation_router(
        subjects.EVENTS_ALL,
        **EVENTS_SOURCE,
        payload=EventEnvelope,
        title=f"{EVENTS_DURABLE}.events",
        description="Domain events (EventEnvelope), taken in batches (up to "
        f"{EVENTS_MAX_BATCH}) and turned into one pending delivery per matching endpoint in one transaction "
        "per batch. Durable pull consumer `webhooks`, explicit acks; a malformed event is terminated.",
    )


def build_catalog_doc_router() -> NatsRouter:
    """Documentation only (AsyncAPI): the event catalog, one EVENTS channel per event type with its typed
    envelope (`TaskCompletedEvent`: the envelope with `data` as the catalog's payload model), so every
    payload's JSON Schema is among the document's components. Whoever emits an event publishes it; this
    service only describes them, as the one that delivers them to customers."""
    router = NatsRouter()
    for entry in catalog.CATALOG.values():
        event_type = entry.event_type
        router.publisher(
            subjects.event("*", event_type.value),
            stream=subjects.EVENTS_STREAM,
            title=f"events.{event_type.value}",
            description=f"{entry.description} Delivered to webhooks: {'yes' if entry.webhooks else 'no'}.",
            schema=catalog.envelope_model(event_type),
        )
    return router
