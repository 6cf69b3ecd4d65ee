"""Wiring: settings, keyring, database, broker and handlers."""

from __future__ import annotations

import logging

from browserfleet_contracts import endpoints, subjects
from browserfleet_core import observability
from browserfleet_core.health import broker_health, health_router, install
from browserfleet_core.messaging import make_broker
from browserfleet_core.org_events import durable_name
from browserfleet_core.runner import wait_for_shutdown
from browserfleet_core.streams import ensure_streams
from faststream.nats import NatsBroker

from .handlers import build_router
from .org_events import build_org_events_router
from .runtime import VaultRuntime
from .settings import VaultSettings

log = logging.getLogger(__name__)


def create_context(settings: VaultSettings) -> VaultRuntime:
    """The rpc subjects only; builds everything without connecting anywhere."""
    rt = VaultRuntime.create(settings, make_broker(settings.nats_url, name=settings.service_name))
    rt.broker.include_router(build_router(rt))
    rt.broker.include_router(health_router(endpoints.Vault.QUEUE, lambda: rt.health))
    return rt


def create_service(settings: VaultSettings) -> VaultRuntime:
    """What `run` serves: the rpc router plus the organization-deletion consumer on EVENTS (tests that only
    exercise the rpc subjects use `create_context`, without the durable consumer)."""
    rt = create_context(settings)
    rt.broker.include_router(build_org_events_router(rt))
    return rt


def create_broker(settings: VaultSettings) -> NatsBroker:
    """What the AsyncAPI generator describes."""
    return create_service(settings).broker


async def run(settings: VaultSettings) -> None:
    observability.setup(settings)
    rt = create_service(settings)
    rt.health = install(
        broker_health(
            endpoints.Vault.QUEUE,
            rt.broker,
            settings,
            database=rt.db,
            consumers=[(subjects.EVENTS_STREAM, durable_name(endpoints.Vault.QUEUE))],
            rpc=rt.broker_rpc.connected,
        )
    )
    await rt.db.ping()
    await rt.broker.connect()
    await ensure_streams(rt.broker.connection.jetstream())  # EVENTS, before its durable consumer
    await rt.broker.start()
    # a removed worker's key is dropped from the cache at once, not after its TTL
    await rt.workers.listen(rt.broker.connection)
    rt.health.mark_started()
    log.info("vault serving (master key version %d)", rt.keyring.current_version)
    try:
        await wait_for_shutdown()
    finally:
        rt.health.mark_stopping()
        await rt.broker.stop()
        await rt.db.dispose()
