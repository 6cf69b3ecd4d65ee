"""Per-principal token buckets (DESIGN.md §5: 10 req/s by default, 429 with Retry-After).

In-process: each gateway replica limits on its own, so N replicas allow up to N times the rate. That is
the usual trade for a stateless edge; a shared limiter would put NATS or Postgres on every request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from browserfleet_core.errors import RateLimited

_MAX_KEYS = 50_000


class TooManyRequests(RateLimited):
    def __init__(self, retry_after: float) -> None:
        super().__init__("too many requests; slow down", code="rate_limited")
        self.retry_after = max(1, math.ceil(retry_after))


class RateLimiter:
    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def hit(self, key: str) -> None:
        """Take one token for `key`, or raise `TooManyRequests` saying when the next one is due."""
        if not self.enabled:
            return
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise TooManyRequests((1.0 - tokens) / self.rate)
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > _MAX_KEYS:
            self._prune(now)

    def _prune(self, now: float) -> None:
        # A bucket that would be full again carries no information; forget it.
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
