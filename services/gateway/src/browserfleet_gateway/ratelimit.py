"""Per-principal token buckets (DESIGN.md §5: 10 req/s per API key by default, 429 with Retry-After).

In-process: each gateway replica limits on its own, so N replicas allow up to N times the rate. That is
the usual trade for a stateless edge; a shared limiter would put NATS or Postgres on every request. (The
maintained libraries we looked at, `limits`/`slowapi`, keep the same per-process memory backend unless
given Redis, which this platform does not run; the bucket below is thirty lines and takes a clock.)
Brute force against sign-in does not rely on this: auth counts failed logins in Postgres, shared by
every replica.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from browserfleet_core.errors import RateLimited

_MAX_KEYS = 50_000


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
    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

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
