"""Wiring: settings -> Database, AuthService, NATS broker with the auth handlers."""

from __future__ import annotations

from dataclasses import dataclass

from browserfleet_core.db import Database
from browserfleet_core.messaging import RpcClient, ensure_streams, make_broker
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.workerkeys import WorkerKeys, rpc_lookup
from faststream.nats import NatsBroker

from .handlers import AuthDeps, create_router
from .models import outbox
from .service import AuthService, BruteForcePolicy
from .settings import AuthSettings

SCHEMA = "auth"
# Only ever used to describe the handlers (AsyncAPI): nothing connects to it.
_DOC_NATS_URL = "nats://127.0.0.1:4222"
# a worker reads its organization's policy once per task: a verified worker key is trusted this long
WORKER_KEY_CACHE_SECONDS = 5.0


@dataclass
class AuthApp:
    settings: AuthSettings
    broker: NatsBroker
    db: Database | None
    service: AuthService
    relay: OutboxRelay | None = None

    async def start(self) -> None:
        """Serve the handlers and relay the outbox (organization events) to JetStream."""
        await self.broker.start()
        if self.relay is not None:
            js = self.broker.connection.jetstream()
            await ensure_streams(js)
            self.relay.start(js)

    async def stop(self) -> None:
        await self.broker.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.db is not None:
            await self.db.dispose()


def build(settings: AuthSettings) -> AuthApp:
    """Everything the service needs, connected to nothing yet: the broker connects on `start()`,
    the database on first query."""
    db = (
        Database(settings.database_url, SCHEMA, pool_size=settings.db_pool_size)
        if settings.database_url
        else None
    )
    relay = OutboxRelay(db, outbox) if db is not None else None
    service = AuthService(
        access_token_ttl_seconds=settings.access_token_ttl_seconds,
        refresh_token_ttl_seconds=settings.refresh_token_ttl_seconds,
        brute_force=BruteForcePolicy(
            slow_after=settings.login_slow_after,
            lock_after_account=settings.login_lock_after_account,
            lock_after_ip=settings.login_lock_after_ip,
            lock_seconds=settings.login_lock_seconds,
        ),
        relay=relay,
    )
    broker = make_broker(settings.nats_url, name=settings.service_name)
    rpc: list[RpcClient] = []

    def rpc_client() -> RpcClient:  # the broker's own connection, once it has started
        if not rpc:
            rpc.append(RpcClient(broker.connection, timeout=settings.rpc_timeout_seconds))
        return rpc[0]

    worker_keys = WorkerKeys(rpc_lookup(rpc_client), ttl_seconds=WORKER_KEY_CACHE_SECONDS)
    broker.include_router(
        create_router(AuthDeps(service=service, db=db, broker=broker, worker_keys=worker_keys))
    )
    return AuthApp(settings=settings, broker=broker, db=db, service=service, relay=relay)


def create_broker(settings: AuthSettings) -> NatsBroker:
    return build(settings).broker


def asyncapi_broker() -> NatsBroker:
    """The broker with every handler registered, for `make contracts`; needs no server and no env."""
    return create_broker(AuthSettings(nats_url=_DOC_NATS_URL, database_url=None))
