"""Wiring: settings, database, broker, routers, outbox relay, startup and shutdown."""

from __future__ import annotations

import asyncio
import logging

from browserfleet_core.db import Database
from browserfleet_core.messaging import RpcClient, ensure_pool_consumers, ensure_streams, make_broker
from browserfleet_core.migrations import upgrade
from browserfleet_core.outbox import OutboxRelay
from faststream.nats import NatsBroker

from .handlers import Runtime, build_routers
from .models import outbox
from .service import RpcWorkerAuthenticator, WorkerAuthenticator
from .settings import SchedulerSettings

log = logging.getLogger(__name__)

PACKAGE = "browserfleet_scheduler"
SCHEMA = "scheduler"


def create_broker(settings: SchedulerSettings, runtime: Runtime | None = None) -> NatsBroker:
    """The service's broker with every handler registered; needs no server (AsyncAPI generation)."""
    broker = make_broker(settings.nats_url, name=settings.service_name)
    for router in build_routers(runtime or Runtime(), rpc_workers=settings.rpc_concurrency):
        broker.include_router(router)
    return broker


def migrate(settings: SchedulerSettings) -> None:
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is required by the scheduler")
    upgrade(PACKAGE, settings.database_url)


class SchedulerApp:
    """One running scheduler: `start()` to serve, `stop()` to leave cleanly."""

    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        authenticator: WorkerAuthenticator | None = None,
        start_relay: bool = True,
    ) -> None:
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is required by the scheduler")
        self.settings = settings
        self.db = Database(settings.database_url, SCHEMA, pool_size=settings.db_pool_size)
        self.relay = OutboxRelay(self.db, outbox, poll_seconds=settings.outbox_poll_seconds)
        self.runtime = Runtime(
            db=self.db,
            relay=self.relay,
            authenticator=authenticator,
            redelivery_seconds=settings.update_redelivery_seconds,
        )
        self.broker = create_broker(settings, self.runtime)
        self._start_relay = start_relay

    async def start(self) -> None:
        if self.settings.migrate_on_start:
            await asyncio.to_thread(migrate, self.settings)
        await self.broker.connect()
        js = self.broker.connection.jetstream()
        # the durable update consumer binds to TASK_UPDATES, so the streams must exist first
        await ensure_streams(js)
        await ensure_pool_consumers(js)
        if self.runtime.authenticator is None:
            rpc = RpcClient(self.broker.connection, timeout=self.settings.rpc_timeout_seconds)
            self.runtime.authenticator = RpcWorkerAuthenticator(
                rpc, ttl=self.settings.worker_auth_cache_seconds
            )
        if self._start_relay:
            self.relay.start(js)
        await self.broker.start()
        log.info("scheduler serving on %s", self.settings.nats_url)

    async def stop(self) -> None:
        await self.broker.stop()
        await self.relay.stop()
        await self.db.dispose()


async def run() -> None:
    import signal

    from browserfleet_core.observability import setup

    settings = SchedulerSettings()  # NATS_URL comes from the environment
    setup(settings)
    # handlers go in before anything starts, so a SIGTERM during startup still ends us cleanly
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = SchedulerApp(settings)
    try:
        await app.start()
        await stop.wait()
    finally:
        await app.stop()
