"""Who a worker key belongs to, asked of worker-gateway before a claim takes the task's row lock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.errors import Unauthorized
from browserfleet_core.messaging import RpcClient
from browserfleet_core.workerkeys import WorkerKeys, rpc_lookup
from nats.aio.client import Client as NatsClient


class WorkerAuthenticator(Protocol):
    async def authenticate(self, worker_key: str) -> WorkerIdentity | None:
        """The worker a key belongs to, or None when the key is unknown, revoked or expired."""
        ...


def known_worker(identity: WorkerIdentity | None) -> WorkerIdentity:
    """The worker whose key came with a request; no worker (the key is unknown, or its worker was removed) is
    an error, answered 401."""
    if identity is None:
        raise Unauthorized(
            "worker key not recognised (unknown, or its worker was removed)", code="invalid_worker_key"
        )
    return identity


class RpcWorkerAuthenticator:
    """Asks worker-gateway (`svc.workers.authenticate`) and trusts a positive answer for `ttl` seconds,
    so a worker's claims do not each cost a round trip (browserfleet_core.workerkeys). An unavailable
    worker-gateway raises (the claim fails, the worker retries) rather than refusing the claim for good."""

    def __init__(
        self,
        rpc: RpcClient,
        *,
        ttl: float = 30.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = WorkerKeys(
            rpc_lookup(lambda: rpc), ttl_seconds=ttl, max_entries=max_entries, clock=clock
        )

    async def authenticate(self, worker_key: str) -> WorkerIdentity | None:
        return await self._keys.identify(worker_key)

    async def listen(self, nc: NatsClient) -> None:
        """Forget a removed worker as soon as worker-gateway broadcasts it (`workers.revoked`)."""
        await self._keys.listen(nc)
