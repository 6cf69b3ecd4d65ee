"""Wiring: settings -> Database, outbox relay, NATS broker with the auth handlers on an `AuthRuntime`."""

from __future__ import annotations

from dataclasses import dataclass

from browserfleet_contracts import endpoints, subjects
from browserfleet_core.batching import BatchConsumer
from browserfleet_core.db import Database
from browserfleet_core.health import Health, broker_health, health_router
from browserfleet_core.lean import LeanRpc
from browserfleet_core.messaging import BrokerRpc, make_broker
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.streams import ensure_streams
from browserfleet_core.workerkeys import WorkerKeys, rpc_lookup
from faststream.nats import NatsBroker

from . import event_audit
from .config import AuthConfig
from .handlers import build_lean, create_router
from .models import outbox
from .oidc import Oidc
from .repository.audit_batch import RequestAuditBatch
from .runtime import AuthRuntime
from .settings import AuthSettings
from .throttle import BruteForcePolicy

SCHEMA = "auth"
# Only ever used to describe the handlers (AsyncAPI): nothing connects to it.
_DOC_NATS_URL = "nats://127.0.0.1:4222"


@dataclass
class AuthApp:
    settings: AuthSettings
    broker: NatsBroker
    db: Database | None
    runtime: AuthRuntime
    lean: LeanRpc
    relay: OutboxRelay | None = None
    audited: BatchConsumer | None = None
    health: Health | None = None

    async def start(self) -> None:
        """Serve the handlers, relay the outbox (organization events) to JetStream and write the audited
        events of other services (event_audit) to the audit log."""
        await self.broker.start()
        await self.lean.start(self.broker.connection)
        # a removed worker's key is dropped from the cache at once, not after its TTL
        await self.runtime.worker_keys.listen(self.broker.connection)
        if self.relay is not None:
            js = self.broker.connection.jetstream()
            await ensure_streams(js)
            self.relay.start(js)
            self.audited = event_audit.build_consumer(self.runtime, self.broker.connection)
            await self.audited.start()
        if self.health is not None:
            self.health.mark_started()

    async def stop(self) -> None:
        if self.health is not None:
            self.health.mark_stopping()
        if self.audited is not None:
            await self.audited.stop()  # finishes the batch in hand while the connection is up
            self.audited = None
        await self.lean.stop()
        if self.db is not None:
            await RequestAuditBatch.of(self.db).close()  # no call entry can arrive any more
        await self.broker.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self.db is not None:
            await self.db.dispose()


def config_from(settings: AuthSettings) -> AuthConfig:
    return AuthConfig(
        access_ttl_seconds=settings.access_token_ttl_seconds,
        refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        brute_force=BruteForcePolicy(
            slow_after=settings.login_slow_after,
            lock_after_account=settings.login_lock_after_account,
            lock_after_ip=settings.login_lock_after_ip,
            lock_seconds=settings.login_lock_seconds,
        ),
    )


def build(settings: AuthSettings, *, config: AuthConfig | None = None) -> AuthApp:
    """Everything the service needs, connected to nothing yet: the broker connects on `start()`,
    the database on first query. `config`: tests bring their own (a clock they move)."""
    db = Database.of_service(settings, SCHEMA) if settings.database_url else None
    relay = OutboxRelay(db, outbox) if db is not None else None
    broker = make_broker(settings.nats_url, name=settings.service_name)
    rpc_client = BrokerRpc(broker, timeout=settings.rpc_timeout_seconds)
    runtime = AuthRuntime(
        config or config_from(settings),
        database=db,
        outbox_relay=relay,
        broker=broker,
        worker_keys=WorkerKeys(rpc_lookup(rpc_client), ttl_seconds=settings.worker_auth_cache_seconds),
        rpc_client=rpc_client,
        oidc=Oidc(allow_http=settings.sso_allow_http_issuers, timeout=settings.sso_http_timeout_seconds),
    )
    broker.include_router(create_router(runtime))
    lean = build_lean(runtime, app_name=settings.service_name)
    app = AuthApp(settings=settings, broker=broker, db=db, runtime=runtime, lean=lean, relay=relay)
    if db is not None:
        app.health = broker_health(
            endpoints.Auth.QUEUE,
            broker,
            settings,
            database=db,
            consumers=[(subjects.EVENTS_STREAM, event_audit.DURABLE)],
            rpc=rpc_client.connected,
        )
    broker.include_router(health_router(endpoints.Auth.QUEUE, lambda: app.health))
    return app


def create_broker(settings: AuthSettings) -> NatsBroker:
    """The broker as AsyncAPI describes it: the handlers and (documentation only) the audited-events consumer."""
    app = build(settings)
    broker = app.broker
    broker.include_router(app.lean.doc_router())
    broker.include_router(event_audit.documentation())
    return broker


def asyncapi_broker() -> NatsBroker:
    """The broker with every handler registered, for `make contracts`; needs no server and no env."""
    return create_broker(AuthSettings(nats_url=_DOC_NATS_URL, database_url=None))
