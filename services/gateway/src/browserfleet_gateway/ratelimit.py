"""Rate limits: per principal (10 req/s per API key by default, per plan; users), and per client address on
sign-in, answered 429 with Retry-After and RateLimit-* headers.

`Limiter` enforces them across every gateway replica: each key's state is one entry of the NATS KV bucket
`rate_limits` (GCRA: the entry is the key's "theoretical arrival time", a wall-clock instant), and a request
changes it with a compare-and-set on the entry's revision, so N replicas allow the rate once, not N times.
A replica remembers the revision it last wrote, so a request costs one KV write (a JetStream publish); a
conflict with another replica costs a read and a retry. The bucket is in memory (the state is worth nothing
after a restart) with STREAM_REPLICAS copies, and drops its least recently written entries when full.

The bucket is gone after a restart of NATS (memory storage) or if someone deleted it: a write that finds no
stream creates it again (`reopen`, get-or-create) and is retried once, so the replicas share their limits
again without being restarted themselves.

If the bucket does not answer (`rate_limit_store_timeout_seconds`), the replica limits on its own
(`RateLimiter`, in process) until a breaker's probe finds the bucket back: degraded to per-replica limits,
never to none. `RATE_LIMIT_STORE=local` chooses the per-replica limits outright. Brute force on sign-in is
also counted by auth in Postgres, per account and per address (the address the gateway resolved,
`clientaddr`).

`RateLimiter` is also what limits the messages of one socket, which lives on one replica anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from browserfleet_contracts import subjects
from browserfleet_core.breaker import CircuitBreaker, CircuitOpen, breakers
from browserfleet_core.errors import RateLimited
from browserfleet_core.streams import ensure_key_value
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoStreamResponseError
from nats.js.kv import KeyValue
from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

_MAX_KEYS = 50_000
# the bucket's entries outlive any key's state (its burst's worth of time) and are dropped after this
BUCKET_MAX_AGE_SECONDS = 3600.0
BUCKET_MAX_BYTES = 64 * 1024 * 1024
_CAS_ATTEMPTS = 8
_EPSILON = 1e-9

STORE_LATENCY = Histogram(
    "browserfleet_gateway_rate_limit_store_seconds",
    "Time a rate-limit decision spent on the shared NATS KV bucket",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)
FALLBACK = Counter(
    "browserfleet_gateway_rate_limit_fallback_total",
    "Rate-limit decisions taken by this replica alone because the shared bucket did not answer",
)


@dataclass(frozen=True)
class Quota:
    """What a request saw of its bucket, for the RateLimit-* headers."""

    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


class TooManyRequests(RateLimited):
    def __init__(self, retry_after: float, quota: Quota | None = None) -> None:
        super().__init__("too many requests; slow down", code="rate_limited")
        self.retry_after = max(1, math.ceil(retry_after))
        self.headers = {**(quota.headers() if quota else {}), "Retry-After": str(self.retry_after)}


class RateLimiter:
    """In-process token buckets: one replica's own view."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def hit(self, key: str, *, rate: float | None = None, burst: int | None = None) -> Quota | None:
        """Take one token for `key`, or raise `TooManyRequests` saying when the next one is due.

        `rate`/`burst` override the limiter's defaults for this key (per-plan limits of API keys)."""
        rate = self.rate if rate is None else rate
        burst = self.burst if burst is None else max(1, burst)
        if rate <= 0:
            return None
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / rate
            raise TooManyRequests(wait, Quota(burst, 0, max(1, math.ceil(wait))))
        tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > _MAX_KEYS:
            self._prune(now)
        return Quota(burst, int(tokens), max(0, math.ceil((burst - tokens) / rate)))

    def _prune(self, now: float) -> None:
        # A bucket that would be full again carries no information; forget it.
        full_after = self.burst / self.rate if self.rate > 0 else 0.0
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}


async def open_bucket(nc: NatsClient, *, timeout: float) -> KeyValue:
    """The shared bucket (created if missing): in memory, STREAM_REPLICAS copies, oldest entries dropped
    when full. Its requests give up after `timeout` seconds: a decision must not wait out NATS's default."""
    js = nc.jetstream(timeout=timeout)
    kv = await ensure_key_value(
        js,
        KeyValueConfig(
            bucket=subjects.RATE_LIMITS_BUCKET,
            description="gateway rate limits: per principal and per client address (GCRA arrival times)",
            history=1,
            ttl=BUCKET_MAX_AGE_SECONDS,
            max_bytes=BUCKET_MAX_BYTES,
            storage=StorageType.MEMORY,
        ),
    )
    # Full: drop the least recently written keys (idle ones) rather than refuse every new one, which would
    # let a flood of sprayed addresses push the limiter onto its per-replica fallback.
    stream = f"KV_{subjects.RATE_LIMITS_BUCKET}"
    info = await js.stream_info(stream)
    if info.config.discard != DiscardPolicy.OLD:
        info.config.discard = DiscardPolicy.OLD
        await js.update_stream(config=info.config)
    return kv


class Limiter:
    """Rate limits shared by every replica through `store` (a KV bucket from `open_bucket`), or this
    replica's own when `store` is None. `rate`/`burst` are the defaults; `hit` may override them per key.
    `reopen` gets the bucket again, created if missing (`open_bucket`), when a write finds it gone."""

    def __init__(
        self,
        store: KeyValue | None,
        rate: float,
        burst: int,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
        breaker: CircuitBreaker | None = None,
        reopen: Callable[[], Awaitable[KeyValue]] | None = None,
    ) -> None:
        self.store = store
        self.reopen = reopen
        self.rate = rate
        self.burst = max(1, burst)
        self.prefix = prefix
        self.clock = clock
        self.local = RateLimiter(rate, self.burst, clock=clock)
        self.breaker = breaker or breakers.get(
            f"nats-kv:{subjects.RATE_LIMITS_BUCKET}", failures=3, cooldown_seconds=5.0
        )
        self._known: dict[str, tuple[int, float]] = {}  # key -> (revision, arrival time) this replica wrote
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def hit(self, key: str, *, rate: float | None = None, burst: int | None = None) -> Quota | None:
        """Count one request of `key`, or raise `TooManyRequests`."""
        rate = self.rate if rate is None else rate
        burst = self.burst if burst is None else max(1, burst)
        if rate <= 0:
            return None
        if self.store is None:
            return self.local.hit(key, rate=rate, burst=burst)
        try:
            self.breaker.check()
        except CircuitOpen:
            FALLBACK.inc()
            return self.local.hit(key, rate=rate, burst=burst)
        started = time.perf_counter()
        try:
            async with self._serial(key):
                quota = await self._shared_hit_reopening(self._entry(key), rate, burst)
        except TooManyRequests:
            self.breaker.success()
            raise
        except (NatsError, TimeoutError) as exc:
            self.breaker.failure()
            FALLBACK.inc()
            log.warning("rate limits: the shared bucket did not answer (%s); limiting per replica", exc)
            return self.local.hit(key, rate=rate, burst=burst)
        except asyncio.CancelledError:
            self.breaker.release()
            raise
        finally:
            STORE_LATENCY.observe(time.perf_counter() - started)
        self.breaker.success()
        return quota

    async def _shared_hit_reopening(self, entry: str, rate: float, burst: int) -> Quota:
        assert self.store is not None
        try:
            return await self._shared_hit(self.store, entry, rate, burst)
        except NoStreamResponseError:
            if self.reopen is None:
                raise
        # no stream behind the bucket's subjects: NATS restarted (memory storage) or it was deleted
        log.warning(
            "rate limits: the shared bucket %s is gone; creating it again", subjects.RATE_LIMITS_BUCKET
        )
        self.store = await self.reopen()
        self._known.clear()  # revisions of the bucket that is gone
        return await self._shared_hit(self.store, entry, rate, burst)

    def _entry(self, key: str) -> str:
        # the key names a principal or an address: KV keys allow neither every character nor need to show them
        return f"{self.prefix}.{hashlib.blake2b(key.encode(), digest_size=16).hexdigest()}"

    async def _shared_hit(self, kv: KeyValue, entry: str, rate: float, burst: int) -> Quota:
        interval = 1.0 / rate
        capacity = burst * interval
        for _ in range(_CAS_ATTEMPTS):
            known = self._known.get(entry)
            if known is None:
                known = await self._read(kv, entry)
            revision, arrival = known
            now = self.clock()
            due = max(arrival, now) + interval
            if due - now > capacity + _EPSILON:
                # An arrival time only moves forward, so a stale one that refuses was right to: no read.
                wait = due - now - capacity
                raise TooManyRequests(wait, Quota(burst, 0, max(1, math.ceil(wait))))
            try:
                written = await kv.update(entry, repr(due).encode(), last=revision)
            except KeyWrongLastSequenceError:  # another replica (or an expiry) moved it: read and retry
                self._known.pop(entry, None)
                continue
            self._remember(entry, written, due)
            remaining = math.floor((capacity - (due - now)) / interval + _EPSILON)
            return Quota(burst, max(0, remaining), max(0, math.ceil(due - now - _EPSILON)))
        raise TimeoutError(f"rate limit entry {entry}: {_CAS_ATTEMPTS} conflicting writes in a row")

    async def _read(self, kv: KeyValue, entry: str) -> tuple[int, float]:
        try:
            found = await kv.get(entry)
        except KeyNotFoundError:
            return 0, 0.0
        try:
            return found.revision or 0, float(found.value or b"0")
        except ValueError:  # not ours: overwrite it
            return found.revision or 0, 0.0

    def _remember(self, entry: str, revision: int, arrival: float) -> None:
        if len(self._known) >= _MAX_KEYS:
            now = self.clock()
            self._known = {k: v for k, v in self._known.items() if v[1] > now}
            if len(self._known) >= _MAX_KEYS:
                self._known.clear()
        self._known[entry] = (revision, arrival)

    def _serial(self, key: str) -> _KeyLock:
        """One decision at a time per key in this replica: its own requests then never conflict."""
        return _KeyLock(self._locks, key)


class _KeyLock:
    def __init__(self, locks: dict[str, tuple[asyncio.Lock, int]], key: str) -> None:
        self.locks = locks
        self.key = key

    async def __aenter__(self) -> None:
        lock, users = self.locks.get(self.key) or (asyncio.Lock(), 0)
        self.locks[self.key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:  # cancelled while waiting: no longer a user
            self._leave()
            raise

    async def __aexit__(self, *_: object) -> None:
        self.locks[self.key][0].release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self.locks[self.key]
        if users <= 1:
            del self.locks[self.key]
        else:
            self.locks[self.key] = (lock, users - 1)
