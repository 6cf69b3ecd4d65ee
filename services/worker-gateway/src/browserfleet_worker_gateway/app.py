"""Wiring: settings, database, broker and handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from browserfleet_contracts import endpoints, subjects
from browserfleet_core import observability
from browserfleet_core.health import broker_health, health_router, install
from browserfleet_core.messaging import BrokerRpc, make_broker
from browserfleet_core.org_events import durable_name
from browserfleet_core.runner import wait_for_shutdown
from browserfleet_core.streams import ensure_streams
from faststream.nats import NatsBroker

from . import invites, presence
from .artifacts import build_artifacts_router
from .callout import AuthCallout
from .handlers import build_router
from .org_events import build_org_events_router
from .runtime import WorkerGatewayRuntime
from .settings import WorkerGatewaySettings
from .socket_server import WorkerSocketServer

log = logging.getLogger(__name__)


def create_context(settings: WorkerGatewaySettings) -> WorkerGatewayRuntime:
    """The rpc subjects only; builds everything without connecting anywhere."""
    rt = WorkerGatewayRuntime.create(settings, make_broker(settings.nats_url, name=settings.service_name))
    rt.broker.include_router(build_router(rt))
    rt.broker.include_router(build_artifacts_router(rt))
    rt.broker.include_router(health_router(endpoints.Workers.QUEUE, lambda: rt.health))
    return rt


def create_service(settings: WorkerGatewaySettings) -> WorkerGatewayRuntime:
    """What `run` serves: the rpc router plus the organization-deletion consumer on EVENTS (tests that only
    exercise the rpc subjects use `create_context`, without the durable consumer)."""
    rt = create_context(settings)
    rt.broker.include_router(build_org_events_router(rt))
    return rt


def create_broker(settings: WorkerGatewaySettings) -> NatsBroker:
    """What the AsyncAPI generator describes."""
    return create_service(settings).broker


async def sweep_offline_loop(rt: WorkerGatewayRuntime) -> None:
    """Every `offline_check_seconds`: silent workers become offline, each with its worker.offline, then
    `browserfleet_workers_online` is counted again. Replicas may all sweep; each change is seen by one of
    them (repository.sweep_offline), and each replica's gauge counts the whole fleet."""
    while True:
        try:
            while await rt.db.run(presence.sweep_offline, rt.relay, offline_after_seconds=rt.offline_after):
                pass
            await rt.db.run(presence.refresh_online, offline_after_seconds=rt.offline_after)
        except Exception:
            log.exception("offline sweep failed; retrying")
        await asyncio.sleep(rt.settings.offline_check_seconds)


async def start(rt: WorkerGatewayRuntime, callout: AuthCallout | None = None) -> asyncio.Task[None]:
    """Connect, declare EVENTS, keep the configured pool invite, relay the outbox, answer the bus's
    authorization requests (before serving: a worker that sees the service answer can connect), serve,
    sweep."""
    await rt.db.ping()
    await rt.broker.connect()
    js = rt.broker.connection.jetstream()
    await ensure_streams(js)  # EVENTS, before its durable consumer
    settings = rt.settings
    await rt.db.run(
        invites.ensure_configured, settings.configured_invite(), settings.platform_pool_invite_pool
    )
    rt.relay.start(js)
    if callout is not None:
        await callout.start(rt.broker.connection)
    await rt.broker.start()
    return asyncio.create_task(sweep_offline_loop(rt), name="offline-sweep")


async def stop(rt: WorkerGatewayRuntime, sweeper: asyncio.Task[None] | None) -> None:
    if sweeper is not None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
    await rt.broker.stop()
    await rt.relay.stop()
    await rt.db.dispose()


@contextlib.asynccontextmanager
async def serving(settings: WorkerGatewaySettings) -> AsyncIterator[WorkerGatewayRuntime]:
    """A worker-gateway serving in this process (the tests' platform), stopped on leaving; its subjects are
    subscribed on the server before this yields."""
    rt = create_service(settings)
    sweeper = await start(rt)
    try:
        await rt.broker.connection.flush()
        yield rt
    finally:
        await stop(rt, sweeper)


def build_health(rt: WorkerGatewayRuntime) -> None:
    rt.health = broker_health(
        endpoints.Workers.QUEUE,
        rt.broker,
        rt.settings,
        database=rt.db,
        consumers=[(subjects.EVENTS_STREAM, durable_name(endpoints.Workers.QUEUE))],
        rpc=BrokerRpc(rt.broker, timeout=rt.settings.rpc_timeout_seconds).connected,
    )


async def run(settings: WorkerGatewaySettings) -> None:
    observability.setup(settings)
    rt = create_service(settings)
    build_health(rt)
    assert rt.health is not None
    install(rt.health)  # the metrics port answers /health/ready with its checks
    callout = AuthCallout.from_env(rt)
    sockets = WorkerSocketServer(rt) if settings.worker_socket_port is not None else None
    sweeper = None
    try:
        sweeper = await start(rt, callout)
        if sockets is not None:
            await sockets.start()
        rt.health.mark_started()
        log.info("worker-gateway serving%s", " (and the bus's auth callout)" if callout else "")
        await wait_for_shutdown()
    finally:
        rt.health.mark_stopping()
        if sockets is not None:  # before the callout: the remote workers' bus connections came through it
            await sockets.stop()
        if callout is not None:
            await callout.stop()
        await stop(rt, sweeper)
