"""Wiring: settings, database, broker and handlers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from browserfleet_core import observability
from browserfleet_core.db import Database
from browserfleet_core.messaging import ensure_streams, make_broker
from browserfleet_core.runner import wait_for_shutdown
from faststream.nats import NatsBroker

from .handlers import build_router
from .models import SCHEMA
from .org_events import build_org_events_router
from .settings import WorkerGatewaySettings

log = logging.getLogger(__name__)


@dataclass
class WorkerGatewayContext:
    settings: WorkerGatewaySettings
    broker: NatsBroker = field(init=False)
    _db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("DATABASE_URL is required to serve worker-gateway requests")
        return self._db


def create_context(settings: WorkerGatewaySettings) -> WorkerGatewayContext:
    """Builds everything without connecting anywhere (the AsyncAPI generator uses this too)."""
    ctx = WorkerGatewayContext(settings=settings)
    if settings.database_url:
        ctx._db = Database(settings.database_url, SCHEMA, pool_size=settings.db_pool_size)
    ctx.broker = make_broker(settings.nats_url, name=settings.service_name)
    ctx.broker.include_router(build_router(ctx))
    return ctx


def create_service(settings: WorkerGatewaySettings) -> WorkerGatewayContext:
    """What `run` serves: the rpc router plus the organization-deletion consumer on EVENTS (tests that only
    exercise the rpc subjects use `create_context`, without the durable consumer)."""
    ctx = create_context(settings)
    ctx.broker.include_router(build_org_events_router(ctx))
    return ctx


def create_broker(settings: WorkerGatewaySettings) -> NatsBroker:
    return create_service(settings).broker


async def run(settings: WorkerGatewaySettings) -> None:
    observability.setup(settings)
    ctx = create_service(settings)
    await ctx.db.ping()
    await ctx.broker.connect()
    await ensure_streams(ctx.broker.connection.jetstream())  # EVENTS, before its durable consumer
    await ctx.broker.start()
    log.info("worker-gateway serving")
    try:
        await wait_for_shutdown()
    finally:
        await ctx.broker.stop()
        await ctx.db.dispose()
