"""Who a worker key belongs to, asked of worker-gateway (`svc.workers.authenticate`) and cached briefly.

Several services act on a worker's word: the scheduler for every claim, auth when a worker reads its
organization's policy. Without a cache each of those would cost worker-gateway a key lookup. Only verified
keys are cached, for `ttl_seconds`, so a key registered a moment ago works at once and a revoked or deleted
worker is refused again within that time. Entries are keyed by the key's hash: a raw key is a credential.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from browserfleet_contracts import subjects
from browserfleet_contracts.workers import WorkerAuthRequest, WorkerIdentity

from .errors import Forbidden, ServiceError, Unauthorized
from .messaging import RpcClient
from .security import hash_token

Lookup = Callable[[str], Awaitable[WorkerIdentity]]

MAX_CACHED_KEYS = 10_000


def rpc_lookup(rpc: Callable[[], RpcClient]) -> Lookup:
    """Asks worker-gateway; its error (401 for an unknown key, 503 when it is down) reaches the caller.
    `rpc` is called per lookup, so a client made once the service's connection exists can be passed."""

    async def lookup(worker_key: str) -> WorkerIdentity:
        identity: WorkerIdentity = await rpc().call(
            subjects.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=worker_key), WorkerIdentity
        )
        return identity

    return lookup


class WorkerKeys:
    def __init__(
        self,
        lookup: Lookup,
        *,
        ttl_seconds: float,
        max_entries: int = MAX_CACHED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._cache: dict[str, tuple[float, WorkerIdentity]] = {}  # hash(key) -> (expires, identity)

    async def verify(self, worker_key: str) -> WorkerIdentity:
        """The key's worker, or the lookup's error (Unauthorized for an unknown key)."""
        digest = hash_token(worker_key)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            identity = await self._lookup(worker_key)
        except ServiceError:
            self._cache.pop(digest, None)
            raise
        if self.ttl > 0:
            if len(self._cache) >= self.max_entries:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
            self._cache[digest] = (now + self.ttl, identity)
        return identity

    async def identify(self, worker_key: str) -> WorkerIdentity | None:
        """`verify`, with a refused key (401/403) as None. Any other error, such as worker-gateway being
        down, still raises: an outage is not a refusal."""
        try:
            return await self.verify(worker_key)
        except ServiceError as exc:
            # RpcClient re-raises the callee's error as a plain ServiceError: judge it by status
            if exc.status in (Unauthorized.status, Forbidden.status):
                return None
            raise
