"""NATS subjects served by the webhooks service: four request/reply commands and the EVENTS consumer."""

from __future__ import annotations

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
from browserfleet_core.db import after_commit
from browserfleet_core.messaging import rpc_router
from faststream import AckPolicy
from faststream.nats import JStream, NatsRouter, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from . import service
from .dispatcher import DELIVERIES_CREATED

if TYPE_CHECKING:
    from .app import Runtime

log = logging.getLogger(__name__)

EVENTS_DURABLE = "webhooks"
# a failed event is offered again after this long, rather than in a tight loop while Postgres is down
RETRY_EVENT_SECONDS = 2.0


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


def build_events_router(rt: Runtime) -> NatsRouter:
    # Not on the rpc router: a failure must leave the event unacknowledged so JetStream offers it again.
    router = NatsRouter()

    @router.subscriber(
        subjects.EVENTS_ALL,
        stream=JStream(subjects.EVENTS_STREAM, declare=False),
        durable=EVENTS_DURABLE,
        config=ConsumerConfig(
            durable_name=EVENTS_DURABLE,
            ack_policy=JsAckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=30.0,
            max_deliver=-1,
            max_ack_pending=1000,
        ),
        pull_sub=PullSub(batch_size=16, timeout=5.0),  # <= the DB pool, so a batch never queues on it
        ack_policy=AckPolicy.MANUAL,
        description="Domain events (EventEnvelope) turned into one pending delivery per matching endpoint.",
    )
    async def on_event(msg: NatsMessage) -> None:
        try:
            event = EventEnvelope.model_validate_json(msg.body)
        except ValidationError as exc:
            # a malformed event will never parse: terminate it instead of redelivering it forever
            log.error("dropping malformed event on %s: %s", msg.raw_message.subject, exc)
            await msg.reject()
            return
        try:
            async with rt.database().transaction() as session:
                created = await service.record_event(session, event)
                if created:
                    after_commit(session, rt.wake_dispatcher)
        except Exception:
            await msg.nack(delay=RETRY_EVENT_SECONDS)
            raise
        if created:
            DELIVERIES_CREATED.inc(created)
        await msg.ack()

    return router
