"""Wiring: settings, keyring, database, broker and handlers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from browserfleet_core import observability
from browserfleet_core.db import Database
from browserfleet_core.messaging import RpcClient, ensure_streams, make_broker
from browserfleet_core.runner import wait_for_shutdown
from browserfleet_core.workerkeys import WorkerKeys, rpc_lookup
from faststream.nats import NatsBroker

from .crypto import Keyring
from .handlers import build_router
from .models import SCHEMA
from .org_events import build_org_events_router
from .settings import VaultSettings

log = logging.getLogger(__name__)


@dataclass
class VaultContext:
    settings: VaultSettings
    keyring: Keyring
    broker: NatsBroker = field(init=False)
    # who a worker key belongs to, asked of worker-gateway and trusted for `worker_auth_cache_seconds`: every
    # secret release and profile use would otherwise cost it a key lookup
    workers: WorkerKeys = field(init=False)
    _db: Database | None = None
    _rpc: RpcClient | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("DATABASE_URL is required to serve vault requests")
        return self._db

    @property
    def rpc(self) -> RpcClient:
        # the broker's own connection, available once it has started
        if self._rpc is None:
            self._rpc = RpcClient(self.broker.connection, timeout=self.settings.rpc_timeout_seconds)
        return self._rpc


def create_context(settings: VaultSettings) -> VaultContext:
    """Builds everything without connecting anywhere (the AsyncAPI generator uses this too)."""
    ctx = VaultContext(settings=settings, keyring=Keyring.from_settings(settings))
    ctx.workers = WorkerKeys(rpc_lookup(lambda: ctx.rpc), ttl_seconds=settings.worker_auth_cache_seconds)
    if settings.database_url:
        ctx._db = Database(settings.database_url, SCHEMA, pool_size=settings.db_pool_size)
    ctx.broker = make_broker(settings.nats_url, name=settings.service_name)
    ctx.broker.include_router(build_router(ctx))
    return ctx


def create_service(settings: VaultSettings) -> VaultContext:
    """What `run` serves: the rpc router plus the organization-deletion consumer on EVENTS (tests that only
    exercise the rpc subjects use `create_context`, without the durable consumer)."""
    ctx = create_context(settings)
    ctx.broker.include_router(build_org_events_router(ctx))
    return ctx


def create_broker(settings: VaultSettings) -> NatsBroker:
    return create_service(settings).broker


async def run(settings: VaultSettings) -> None:
    observability.setup(settings)
    ctx = create_service(settings)
    await ctx.db.ping()
    await ctx.broker.connect()
    await ensure_streams(ctx.broker.connection.jetstream())  # EVENTS, before its durable consumer
    await ctx.broker.start()
    log.info("vault serving (master key version %d)", ctx.keyring.current_version)
    try:
        await wait_for_shutdown()
    finally:
        await ctx.broker.stop()
        await ctx.db.dispose()
