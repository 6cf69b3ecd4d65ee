"""Who a worker key belongs to, asked of worker-gateway (`svc.workers.authenticate`) and cached briefly.

Several services act on a worker's word: the scheduler for every claim, auth when a worker reads its
organization's policy. Without a cache each of those would cost worker-gateway a key lookup. Only verified
keys are cached, for `ttl_seconds`, so a key registered a moment ago works at once and a revoked or deleted
worker is refused again within that time. Entries are keyed by the key's hash: a raw key is a credential.

A removed worker is dropped at once: worker-gateway broadcasts `workers.revoked` after the commit and every
cache that `listen`s forgets that worker (the TTL bounds a missed broadcast).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.workers import WorkerAuthRequest, WorkerIdentity, WorkerRevoked
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .errors import Forbidden, ServiceError, Unauthorized
from .messaging import RpcClient
from .security import hash_token

log = logging.getLogger(__name__)

Lookup = Callable[[str], Awaitable[WorkerIdentity]]

MAX_CACHED_KEYS = 10_000


def rpc_lookup(rpc: Callable[[], RpcClient]) -> Lookup:
    """Asks worker-gateway; its error (401 for an unknown key, 503 when it is down) reaches the caller.
    `rpc` is called per lookup, so a client made once the service's connection exists can be passed."""

    async def lookup(worker_key: str) -> WorkerIdentity:
        identity: WorkerIdentity = await rpc().call(
            endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=worker_key)
        )
        return identity

    return lookup


@dataclass(eq=False)
class WorkerKeys:
    lookup: Lookup
    _: KW_ONLY
    ttl_seconds: float
    max_entries: int = MAX_CACHED_KEYS
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._cache: dict[str, tuple[float, WorkerIdentity]] = {}  # hash(key) -> (expires, identity)

    @property
    def ttl(self) -> float:
        """How long a verified key is trusted, in seconds (`ttl_seconds`)."""
        return self.ttl_seconds

    async def verify(self, worker_key: str, *, fresh: bool = False) -> WorkerIdentity:
        """The key's worker, or the lookup's error (Unauthorized for an unknown key). `fresh` asks
        worker-gateway even on a cached hit (and caches the answer): the vault does when the worker's
        public key differs from the cached one, which a restart (a new key pair) makes happen."""
        digest = hash_token(worker_key)
        now = self.clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now and not fresh:
            return hit[1]
        try:
            identity = await self.lookup(worker_key)
        except ServiceError:
            self._cache.pop(digest, None)
            raise
        if self.ttl_seconds > 0:
            if len(self._cache) >= self.max_entries:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
            self._cache[digest] = (now + self.ttl_seconds, identity)
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

    def drop_worker(self, worker_id: str) -> None:
        """Forget every cached key of `worker_id` (it was removed): its next request asks worker-gateway."""
        self._cache = {k: v for k, v in self._cache.items() if v[1].worker_id != worker_id}

    async def listen(self, nc: NatsClient) -> Subscription:
        """Drop removed workers as worker-gateway announces them on `workers.revoked` (core NATS, no queue
        group: every replica of every service hears it)."""

        async def on_revoked(msg: Msg) -> None:
            try:
                notice = WorkerRevoked.model_validate_json(msg.data)
            except ValueError:
                log.warning("ignoring a malformed worker revocation")
                return
            self.drop_worker(notice.worker_id)

        return await nc.subscribe(subjects.WORKER_REVOKED, cb=on_revoked)
