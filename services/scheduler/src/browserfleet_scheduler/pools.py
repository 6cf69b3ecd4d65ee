"""The registered pools, asked of worker-gateway (`svc.workers.pools`) and kept `ttl` seconds.

Why ask rather than follow worker events: routing needs each pool's tags as all of its workers have them, a
fact no single event carries, and a scheduler that starts (or missed events) would have to rebuild it anyway.
The registry is small and changes when workers register or leave; one request per replica every few seconds
is cheap, needs no durable state, and heals by itself. While worker-gateway cannot answer, the last answer
(and POOLS) keeps routing. The first sight of a pool creates its consumers, so its workers can pull at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field

from browserfleet_contracts.workers import PoolInfo

from .policy import Pool

log = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[list[PoolInfo]]]
Ensure = Callable[[str], Awaitable[None]]


@dataclass(eq=False)
class PoolRegistry:
    """`fetch` asks worker-gateway for the pools; `ensure` creates a pool's consumers, once per pool."""

    fetch: Fetch
    _: KW_ONLY
    ttl: float
    ensure: Ensure | None = None
    clock: Callable[[], float] = time.monotonic
    _pools: tuple[Pool, ...] = field(default=(), init=False)
    _known: set[str] = field(default_factory=set, init=False)
    _next: float = field(default=0.0, init=False)
    _failing: bool = field(default=False, init=False)
    _asked: bool = field(default=False, init=False)  # an answer, or a failure, came back at least once
    _refreshing: asyncio.Task[None] | None = field(default=None, init=False)

    async def snapshot(self) -> tuple[Pool, ...]:
        """The registered pools, refreshed when the last answer is older than `ttl` (waiting for the answer,
        or for the refresh already in flight)."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return self._pools
        now = self.clock()
        if now < self._next:
            return self._pools
        self._next = now + self.ttl
        await self._refresh()
        return self._pools

    def current(self) -> tuple[Pool, ...] | None:
        """The last answer at once, for a create's hot path: an answer older than `ttl` is still used while
        its refresh runs in the background, so no create waits a round trip to worker-gateway (a timeout,
        while it is down) every `ttl`. A task the stale answer cannot route is queued, and its create wakes
        the pass, whose `snapshot()` waits for the fresh one. None before any answer: ask `snapshot()`."""
        if not self._asked:
            return None
        now = self.clock()
        if now >= self._next and self._refreshing is None:
            self._next = now + self.ttl
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh_aside())
        return self._pools

    async def _refresh_aside(self) -> None:
        try:
            await self._refresh()
        except Exception:
            log.exception("refreshing the registered pools failed")
        finally:
            self._refreshing = None

    async def _refresh(self) -> None:
        try:
            infos = await self.fetch()
        except Exception as exc:
            if not self._failing:
                log.warning("cannot read the registered pools (%s); routing with the last known ones", exc)
            self._failing = True
            self._asked = True
            return
        if self._failing:
            log.info("registered pools are readable again")
        self._failing = False
        for info in infos:
            if info.key in self._known:
                continue
            try:
                if self.ensure is not None:
                    await self.ensure(info.key)
            except Exception:
                log.exception(
                    "creating the consumers of pool %s failed; retrying at the next refresh", info.key
                )
                continue
            self._known.add(info.key)
        self._pools = tuple(Pool(i.key, i.org_id, frozenset(i.tags)) for i in infos)
        self._asked = True
