"""The scheduler's knobs (admission, retries, timeouts) as plain values, built from SchedulerSettings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from browserfleet_contracts import subjects


@dataclass(frozen=True)
class Pool:
    """A pool as routing sees it: its subject token, whose it is (None: the platform's, serving every
    organization) and the tags all of its workers have."""

    key: str
    org_id: str | None
    tags: frozenset[str]


@dataclass(frozen=True)
class Policy:
    """Admission, retry and timeout knobs (from SchedulerSettings); plain values, easy to test."""

    # the platform's default pools (POOLS); registered pools come from worker-gateway at admission time
    pools: dict[str, frozenset[str]] = field(default_factory=lambda: {subjects.DEFAULT_POOL: frozenset()})
    plan_limits: dict[str, int] = field(default_factory=dict)
    default_concurrency: int = 10
    batch: int = 100
    scan: int = 1000
    retry_backoff_seconds: float = 2.0
    retry_backoff_cap_seconds: float = 300.0
    queue_timeout_seconds: float = 3600.0
    run_timeout_grace_seconds: float = 5.0

    def limit_for(self, plan: str | None) -> int:
        if plan is not None and plan in self.plan_limits:
            return self.plan_limits[plan]
        return self.default_concurrency

    def route(
        self, tags: list[str], org_id: str | None = None, registered: Sequence[Pool] = ()
    ) -> str | None:
        """The pool for a task of `org_id` needing `tags`: among the platform's pools (POOLS, and those
        workers registered in, which win over a POOLS entry of the same name) and `org_id`'s own registered
        pools, one whose tags include all of `tags`. The fewest extra tags wins, so a plain task does not take
        a GPU pool's slot while a plain pool exists; then the organization's own pool before the platform's.
        Another organization's pool is never a candidate: its consumers only ever carry its own tasks."""
        need = set(tags)
        pools = {name: Pool(name, None, have) for name, have in self.pools.items()}
        for pool in registered:
            if pool.org_id is None or pool.org_id == org_id:
                pools[pool.key] = pool
        fits = [(len(p.tags - need), p.org_id is None, p.key) for p in pools.values() if need <= p.tags]
        return min(fits)[2] if fits else None
