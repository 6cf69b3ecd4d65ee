"""Admission: which queued tasks are dispatched now (priority, orgs taking turns, each org's concurrency
limit, a worker pool with the task's tags), and their TASKS messages through the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from browserfleet_contracts import subjects
from browserfleet_core.db import AsyncSession
from browserfleet_core.outbox import OutboxRelay
from pydantic import BaseModel

from . import repository, state
from .models import Task
from .policy import Policy, Pool
from .views import to_dispatch


def fair_order(candidates: list[Task], last_served: dict[str, datetime]) -> list[Task]:
    """Priority first; within one priority, orgs take turns (the k-th task of every org before the
    (k+1)-th of any), the org served longest ago first; FIFO within an org."""
    seen: dict[tuple[str, str], int] = {}
    keyed: list[tuple[int, int, datetime, datetime, str, Task]] = []
    never = datetime.min.replace(tzinfo=UTC)
    for t in candidates:  # already priority then FIFO ordered
        k = seen.get((t.priority, t.org_id), 0)
        seen[(t.priority, t.org_id)] = k + 1
        rank = repository.PRIORITY_RANK.get(t.priority, 9)
        keyed.append((rank, k, last_served.get(t.org_id, never), t.created_at, t.id, t))
    keyed.sort(key=lambda x: x[:5])
    return [x[5] for x in keyed]


async def admit(
    session: AsyncSession,
    relay: OutboxRelay,
    policy: Policy,
    now: datetime,
    registered: Sequence[Pool] = (),
) -> list[str]:
    """One admission pass: dispatch what may run now, routing by POOLS and the `registered` pools. Returns
    the admitted task ids.

    Replicas serialise on an advisory lock (a pass that finds it taken does nothing), so per-org
    counts cannot be overrun by two replicas admitting at once; the rows are also locked SKIP LOCKED so
    a claim or cancel in flight is simply left for the next pass."""
    if not await repository.try_admission_lock(session):
        return []
    candidates = await repository.admission_candidates(session, now, policy.scan)
    if not candidates:
        return []
    orgs = sorted({t.org_id for t in candidates})
    active, last_served = await repository.org_admission_state(session, orgs)
    admitted: list[str] = []
    changed: list[Task] = []
    # the TASKS messages of this pass go into the outbox in one INSERT; the msg id of an attempt's
    # dispatch is stable, so an outbox replay after a crash is a duplicate JetStream drops
    dispatches: list[tuple[str, BaseModel | bytes, str]] = []
    for task in fair_order(candidates, last_served):
        pool = policy.route(list(task.worker_tags), task.org_id, registered)
        if pool is None:
            detail = f"no worker pool has all of the tags {', '.join(sorted(task.worker_tags))}"
        elif active.get(task.org_id, 0) >= policy.limit_for(task.plan):
            detail = f"waiting: the organization runs {policy.limit_for(task.plan)} task(s) at once (its plan's limit)"
        elif len(admitted) >= policy.batch:
            break
        else:
            state.move(task, "assigned", now)
            task.pool = pool
            task.dispatched_at = now
            task.status_detail = f"dispatched to pool {pool}"
            dispatches.append(
                (
                    subjects.task_run(pool, task.priority),
                    to_dispatch(task),
                    subjects.dispatch_msg_id(task.id, task.attempt),
                )
            )
            active[task.org_id] = active.get(task.org_id, 0) + 1
            admitted.append(task.id)
            changed.append(task)
            continue
        if task.status_detail != detail:
            task.status_detail = detail
            task.updated_at = now
            changed.append(task)
    await relay.enqueue_many(session, dispatches)
    if changed:
        await repository.save(session, *changed)
    return admitted
