"""Wiring: settings, keyring, database, broker and handlers."""

from __future__ import annotations

import logging

from browserfleet_contracts import endpoints, subjects
from browserfleet_core import observability
from browserfleet_core.health import broker_connection, health_router, install, service_health
from browserfleet_core.messaging import RpcClient, make_broker
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

    def rpc() -> RpcClient | None:
        return rt.rpc if rt.broker._connection is not None else None

    rt.health = install(
        service_health(
            endpoints.Vault.QUEUE,
            nats=broker_connection(rt.broker),
            database=rt.db,
            consumers=[(subjects.EVENTS_STREAM, durable_name(endpoints.Vault.QUEUE))],
            rpc=rpc,
            timeout=settings.health_timeout_seconds,
            max_consumer_lag=settings.health_max_consumer_lag,
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
