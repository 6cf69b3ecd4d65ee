"""NATS subjects served by the webhooks service: four request/reply commands (FastStream) and the EVENTS
consumer (a BatchConsumer: one transaction per batch of events)."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Ack, ById, OrgScoped
from browserfleet_contracts.events import EventEnvelope
from browserfleet_contracts.webhooks import (
    CreateEndpointRequest,
    ListDeliveriesRequest,
    WebhookDeliveryPublic,
    WebhookEndpointPublic,
)
from browserfleet_core.batching import (
    BatchConsumer,
    documentation_router,
    durable_config,
    parse_batch,
    record_each_or_all,
)
from browserfleet_core.db import after_commit
from browserfleet_core.messaging import rpc_router
from faststream.nats import NatsRouter
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import Histogram

from . import service
from .dispatcher import DELIVERIES_CREATED

if TYPE_CHECKING:
    from .app import Runtime

log = logging.getLogger(__name__)

EVENTS_DURABLE = "webhooks"
EVENTS_CONSUMER = durable_config(EVENTS_DURABLE, subjects.EVENTS_ALL, max_ack_pending=1000)
# events per transaction at most; a batch holds one database connection
EVENTS_MAX_BATCH = 64
# a failed event is offered again after this long, rather than in a tight loop while Postgres is down
RETRY_EVENT_SECONDS = 2.0

EVENT_BATCH_SIZE = Histogram(
    "browserfleet_webhook_event_batch_size",
    "Events the webhooks service recorded per batch (one transaction each)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


def build_rpc_router(rt: Runtime) -> NatsRouter:
    router = rpc_router()
    queue = subjects.Webhooks.QUEUE

    @router.subscriber(subjects.Webhooks.CREATE_ENDPOINT, queue=queue)
    async def create_endpoint(body: CreateEndpointRequest) -> WebhookEndpointPublic:
        """Register an endpoint (admins only). The reply carries the signing secret, this once."""
        async with rt.database().transaction() as session:
            return await service.create_endpoint(
                session, body.actor, body.endpoint, allow_private=rt.settings.webhook_allow_private_targets
            )

    @router.subscriber(subjects.Webhooks.LIST_ENDPOINTS, queue=queue)
    async def list_endpoints(body: OrgScoped) -> list[WebhookEndpointPublic]:
        async with rt.database().transaction() as session:
            return await service.list_endpoints(session, body.actor)

    @router.subscriber(subjects.Webhooks.DELETE_ENDPOINT, queue=queue)
    async def delete_endpoint(body: ById) -> Ack:
        async with rt.database().transaction() as session:
            await service.delete_endpoint(session, body.actor, body.id)
        return Ack()

    @router.subscriber(subjects.Webhooks.LIST_DELIVERIES, queue=queue)
    async def list_deliveries(body: ListDeliveriesRequest) -> list[WebhookDeliveryPublic]:
        async with rt.database().transaction() as session:
            return await service.list_deliveries(
                session, body.actor, endpoint_id=body.endpoint_id, limit=body.limit
            )

    return router


def build_events_consumer(rt: Runtime, nc: NatsClient) -> BatchConsumer:
    """The EVENTS consumer: a BatchConsumer (not FastStream) so that one transaction records a batch."""
    return BatchConsumer(
        nc,
        stream=subjects.EVENTS_STREAM,
        durable=EVENTS_DURABLE,
        config=EVENTS_CONSUMER,
        handler=functools.partial(on_events, rt),
        max_batch=EVENTS_MAX_BATCH,
        expires=5.0,
    )


async def on_events(rt: Runtime, msgs: list[Msg]) -> None:
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


async def _record(rt: Runtime, events: list[EventEnvelope]) -> None:
    async with rt.database().transaction() as session:
        created = await service.record_events(session, events)
        if created:
            after_commit(session, rt.wake_dispatcher)
    if created:
        DELIVERIES_CREATED.inc(created)


def build_events_doc_router() -> NatsRouter:
    """Documentation only (AsyncAPI): the EVENTS consumer is a BatchConsumer, not a FastStream subscriber,
    so a broker built to describe the service declares it here. Never part of a running broker."""
    return documentation_router(
        subjects.EVENTS_ALL,
        stream=subjects.EVENTS_STREAM,
        durable=EVENTS_DURABLE,
        payload=EventEnvelope,
        config=EVENTS_CONSUMER,
        title=f"{EVENTS_DURABLE}.events",
        description="Domain events (EventEnvelope), taken in batches (up to "
        f"{EVENTS_MAX_BATCH}) and turned into one pending delivery per matching endpoint in one transaction "
        "per batch. Durable pull consumer `webhooks`, explicit acks; a malformed event is terminated.",
    )
