"""Wiring of the webhooks service: broker, routers, the EVENTS consumer and the dispatcher's lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Callable

from browserfleet_contracts import endpoints, subjects
from browserfleet_core import observability
from browserfleet_core.batching import BatchConsumer
from browserfleet_core.db import utcnow
from browserfleet_core.health import Health, broker_health, health_router, install
from browserfleet_core.messaging import make_broker
from browserfleet_core.org_events import durable_name
from browserfleet_core.runner import wait_for_shutdown
from browserfleet_core.streams import ensure_streams
from faststream.nats import NatsBroker

from . import handlers, signing_keys
from .org_events import build_org_events_router
from .repository.takers import TakerCheck
from .runtime import WebhooksRuntime
from .settings import WebhooksSettings

log = logging.getLogger(__name__)


def create_broker(
    settings: WebhooksSettings,
    runtime: WebhooksRuntime | None = None,
    health: Callable[[], Health | None] = lambda: None,
) -> NatsBroker:
    """The service's broker with all its subscribers; connects to nothing until started.

    Without a runtime the broker is built to describe the service (AsyncAPI): it then also declares the
    EVENTS consumer, which at run time is a BatchConsumer beside the broker, not one of its subscribers."""
    rt = runtime or WebhooksRuntime(settings)
    broker = make_broker(settings.nats_url, name=settings.service_name)
    broker.include_router(handlers.build_rpc_router(rt))
    broker.include_router(build_org_events_router(rt))
    broker.include_router(health_router(endpoints.Webhooks.QUEUE, health))
    if runtime is None:
        broker.include_router(handlers.build_events_doc_router())
        broker.include_router(handlers.build_catalog_doc_router())
    return broker


class WebhooksService:
    def __init__(self, settings: WebhooksSettings) -> None:
        self.settings = settings
        self.runtime = WebhooksRuntime.create(settings)
        self.db = self.runtime.db
        self.broker = create_broker(settings, self.runtime, lambda: self.health)
        # it calls no other service: the database, NATS and its EVENTS consumers are what it needs
        self.health = broker_health(
            endpoints.Webhooks.QUEUE,
            self.broker,
            settings,
            database=self.db,
            consumers=[
                (subjects.EVENTS_STREAM, handlers.EVENTS_DURABLE),
                (subjects.EVENTS_STREAM, durable_name(endpoints.Webhooks.QUEUE)),
            ],
        )
        self.events: BatchConsumer | None = None

    async def start(self) -> None:
        await self.db.ping()
        # secrets an older version kept in clear are sealed before anything signs with them
        sealed = await self.db.run(signing_keys.seal_legacy, self.runtime.box, utcnow())
        if sealed:
            log.info("sealed %d webhook secret(s) stored in clear by an earlier version", sealed)
        await self.broker.connect()
        # the EVENTS stream must exist before the durable consumer is created on it
        js = self.broker.connection.jetstream()
        await ensure_streams(js)
        await self.broker.start()
        self.runtime.relay.start(js)
        self.events = handlers.build_events_consumer(self.runtime, self.broker.connection)
        await self.events.start()
        self.runtime.dispatcher.start()
        # deliveries that were due while no replica ran go out now rather than after the first poll
        await self.runtime.wake_dispatcher()
        self.health.mark_started()
        log.info("webhooks service started")

    async def stop(self) -> None:
        self.health.mark_stopping()
        if self.events is not None:
            await self.events.stop()  # finishes the batch in hand while the broker's connection is up
            self.events = None
        await TakerCheck.of(self.db).close()
        await self.runtime.dispatcher.stop()
        await self.runtime.relay.stop()
        await self.broker.stop()
        await self.db.dispose()


async def run(settings: WebhooksSettings | None = None) -> None:
    settings = settings or WebhooksSettings()
    observability.setup(settings)
    svc = WebhooksService(settings)
    install(svc.health)  # the metrics port answers /health/ready with its checks
    await svc.start()
    try:
        await wait_for_shutdown()
    finally:
        await svc.stop()
