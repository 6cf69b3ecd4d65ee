"""Wiring of the webhooks service: settings, database, broker, routers, dispatcher."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from browserfleet_core import observability
from browserfleet_core.batching import BatchConsumer
from browserfleet_core.db import Database
from browserfleet_core.messaging import ensure_streams, make_broker
from browserfleet_core.runner import wait_for_shutdown
from faststream.nats import NatsBroker

from . import handlers
from .dispatcher import Dispatcher
from .models import SCHEMA
from .org_events import build_org_events_router
from .settings import WebhooksSettings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the handlers need at run time; empty when the broker is only built to describe itself."""

    settings: WebhooksSettings
    db: Database | None = None
    dispatcher: Dispatcher | None = field(default=None)

    def database(self) -> Database:
        if self.db is None:
            raise RuntimeError("webhooks runtime has no database (broker built for documentation only)")
        return self.db

    async def wake_dispatcher(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.wake()


def create_broker(settings: WebhooksSettings, runtime: Runtime | None = None) -> NatsBroker:
    """The service's broker with all its subscribers; connects to nothing until started.

    Without a runtime the broker is built to describe the service (AsyncAPI): it then also declares the
    EVENTS consumer, which at run time is a BatchConsumer beside the broker, not one of its subscribers."""
    rt = runtime or Runtime(settings)
    broker = make_broker(settings.nats_url, name=settings.service_name)
    broker.include_router(handlers.build_rpc_router(rt))
    broker.include_router(build_org_events_router(rt))
    if runtime is None:
        broker.include_router(handlers.build_events_doc_router())
    return broker


class WebhooksService:
    def __init__(self, settings: WebhooksSettings) -> None:
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is required for the webhooks service")
        self.settings = settings
        self.db = Database(
            settings.database_url,
            SCHEMA,
            pool_size=settings.db_pool_size,
            ping_after_idle=settings.db_ping_after_idle_seconds,
        )
        self.dispatcher = Dispatcher(self.db, settings)
        self.runtime = Runtime(settings, db=self.db, dispatcher=self.dispatcher)
        self.broker = create_broker(settings, self.runtime)
        self.events: BatchConsumer | None = None

    async def start(self) -> None:
        await self.db.ping()
        await self.broker.connect()
        # the EVENTS stream must exist before the durable consumer is created on it
        await ensure_streams(self.broker.connection.jetstream())
        await self.broker.start()
        self.events = handlers.build_events_consumer(self.runtime, self.broker.connection)
        await self.events.start()
        self.dispatcher.start()
        # deliveries that were due while no replica ran go out now rather than after the first poll
        await self.dispatcher.wake()
        log.info("webhooks service started")

    async def stop(self) -> None:
        if self.events is not None:
            await self.events.stop()  # finishes the batch in hand while the broker's connection is up
            self.events = None
        await self.broker.stop()
        await self.dispatcher.stop()
        await self.db.dispose()


async def run(settings: WebhooksSettings | None = None) -> None:
    settings = settings or WebhooksSettings()
    observability.setup(settings)
    svc = WebhooksService(settings)
    await svc.start()
    try:
        await wait_for_shutdown()
    finally:
        await svc.stop()
