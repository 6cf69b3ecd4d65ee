"""The pool registry: every pool some live worker registered in, with the tags all of its workers have.
The scheduler routes by it (a task goes to a pool whose tags include all of the task's `worker_tags`), so a
tag only one replica of a pool has never draws a task to a replica without it."""

from __future__ import annotations

from datetime import datetime, timedelta

from browserfleet_contracts.workers import PoolInfo
from browserfleet_core.db import AsyncSession, utcnow

from . import repository


async def registry(
    session: AsyncSession, *, offline_after_seconds: float, now: datetime | None = None
) -> list[PoolInfo]:
    now = now or utcnow()
    fresh = now - timedelta(seconds=offline_after_seconds)
    pools: dict[str, PoolInfo] = {}
    tags: dict[str, set[str]] = {}
    for org_id, key, name, worker_tags, last_seen, presence in await repository.pool_members(session):
        online = int(presence == "online" and last_seen is not None and last_seen > fresh)
        pool = pools.get(key)
        if pool is None:
            pools[key] = PoolInfo(key=key, name=name, org_id=org_id, tags=[], workers=1, online=online)
            tags[key] = set(worker_tags)
        else:
            pool.workers += 1
            pool.online += online
            tags[key] &= set(worker_tags)
    for key, pool in pools.items():
        pool.tags = sorted(tags[key])
    return sorted(pools.values(), key=lambda p: p.key)
