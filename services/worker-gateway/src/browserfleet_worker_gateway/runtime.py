"""What worker-gateway's handlers need at run time: its settings, database, broker and outbox relay, and the
after-commit notices (the `workers.revoked` broadcast, a drain request, a new pool's consumers)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from browserfleet_contracts import subjects
from browserfleet_contracts.workers import WorkerRevoked
from browserfleet_core.db import Database
from browserfleet_core.health import Health
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.runtime_parts import Required
from browserfleet_core.streams import ensure_pool_consumers
from faststream.nats import NatsBroker

from .models import SCHEMA, Worker, outbox
from .settings import WorkerGatewaySettings

log = logging.getLogger(__name__)

NO_DATABASE = "DATABASE_URL is required to serve worker-gateway requests"


@dataclass
class WorkerGatewayRuntime:
    settings: WorkerGatewaySettings
    broker: NatsBroker
    # None when the broker is built only to describe itself (no DATABASE_URL)
    _db: Database | None = None
    _relay: OutboxRelay | None = None
    _pools: set[str] = field(default_factory=set)  # pools whose consumers exist (made at registration)
    # its checks, once `run` has built them (svc.workers.health answers "starting" before)
    health: Health | None = None

    @classmethod
    def create(cls, settings: WorkerGatewaySettings, broker: NatsBroker) -> WorkerGatewayRuntime:
        """Connects to nothing: the database pool opens on first use, the relay publishes once started."""
        db = relay = None
        if settings.database_url:
            db = Database.of_service(settings, SCHEMA)
            relay = OutboxRelay(db, outbox, poll_seconds=settings.outbox_poll_seconds, publish_on_commit=True)
        return cls(settings=settings, broker=broker, _db=db, _relay=relay)

    db = Required[Database](NO_DATABASE)
    relay = Required[OutboxRelay](NO_DATABASE)

    @property
    def offline_after(self) -> float:
        return self.settings.offline_after_seconds

    async def announce_revoked(self, worker: Worker) -> None:
        """After the commit: every cache of worker keys (scheduler, vault, auth) drops the worker now; a
        missed broadcast is bounded by those caches' TTL."""
        notice = WorkerRevoked(worker_id=worker.id, org_id=worker.org_id)
        try:
            await self.broker.connection.publish(subjects.WORKER_REVOKED, notice.model_dump_json().encode())
        except Exception:
            log.exception("broadcasting the revocation of worker %s failed", worker.id)

    async def ask_drain(self, worker_id: str) -> None:
        """After the commit: the worker is told at once if it listens (its next heartbeat's reply says it too,
        so a worker that missed this still drains)."""
        try:
            await self.broker.connection.publish(subjects.worker_drain(worker_id), b"")
        except Exception:
            log.exception("asking worker %s to drain failed; its next heartbeat will", worker_id)

    async def ensure_pool(self, pool: str) -> None:
        """A pool's consumers exist before its first worker pulls: workers need no right to create them."""
        if pool in self._pools:
            return
        try:
            await ensure_pool_consumers(self.broker.connection.jetstream(), pool)
        except Exception:
            log.exception("creating the consumers of pool %s failed; the scheduler creates them too", pool)
            return
        self._pools.add(pool)
