"""What the vault's handlers need at run time: settings, keyring, database, the broker whose connection the
rpc client uses, and the cache of worker keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from browserfleet_core.db import Database
from browserfleet_core.health import Health
from browserfleet_core.messaging import BrokerRpc, RpcClient
from browserfleet_core.runtime_parts import required
from browserfleet_core.workerkeys import WorkerKeys, rpc_lookup
from faststream.nats import NatsBroker

from .crypto import Keyring
from .models import SCHEMA
from .settings import VaultSettings


@dataclass
class VaultRuntime:
    settings: VaultSettings
    keyring: Keyring
    broker: NatsBroker
    # None when the broker is built only to describe itself (no DATABASE_URL)
    _db: Database | None = None
    # who a worker key belongs to, asked of worker-gateway and trusted for `worker_auth_cache_seconds`: every
    # secret release and profile use would otherwise cost it a key lookup
    workers: WorkerKeys = field(init=False)
    broker_rpc: BrokerRpc = field(init=False)
    # its checks, once `run` has built them (svc.vault.health answers "starting" before)
    health: Health | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.broker_rpc = BrokerRpc(self.broker, timeout=self.settings.rpc_timeout_seconds)
        self.workers = WorkerKeys(
            rpc_lookup(self.broker_rpc), ttl_seconds=self.settings.worker_auth_cache_seconds
        )

    @classmethod
    def create(cls, settings: VaultSettings, broker: NatsBroker) -> VaultRuntime:
        """Connects to nothing: the database pool opens on first use, the rpc client once the broker runs."""
        db = None
        if settings.database_url:
            db = Database.of_service(settings, SCHEMA)
        return cls(settings=settings, keyring=Keyring.from_settings(settings), broker=broker, _db=db)

    @property
    def db(self) -> Database:
        return required(self._db, "DATABASE_URL is required to serve vault requests")

    @property
    def rpc(self) -> RpcClient:
        return self.broker_rpc()
