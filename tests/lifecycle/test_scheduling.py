"""Admission and dispatch on real scheduler processes (`python -m browserfleet_scheduler run`, one or two of
them), a real worker-gateway process, real NATS JetStream and real PostgreSQL (conftest.py).

The worker here is conftest.ProtocolWorker, a test worker that speaks the task protocol without a browser. Each
test gets its own pool (a unique tag), so its TASKS consumers carry nothing of another test's.

Barriers instead of waiting: to show that something was *not* admitted, a test creates a task of an unlimited
org afterwards and waits until that one is dispatched, which proves an admission pass ran in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from browserfleet_contracts import subjects
from browserfleet_contracts.tasks import CreateTaskRequest
from browserfleet_core.db import Database
from browserfleet_core.outbox import OutboxRelay
from browserfleet_scheduler import creation as scheduler_creation
from browserfleet_scheduler.models import outbox

from .conftest import (
    Stack,
    admission_pass,
    create,
    events_of,
    eventually,
    get,
    org,
    schedulers,
    task_body,
    unique_pool,
    wait_status,
    worker,
)


# --- tests ----------------------------------------------------------------------------------------
async def test_priority_order_when_capacity_frees(stack: Stack) -> None:
    pool = unique_pool()
    who = org("solo")  # one task at a time
    async with schedulers(stack, pool), worker(stack, pool) as w:
        blocker = await create(stack, who, task_body(pool, "low", "blocker"))
        assert (await w.take()).task_id == blocker.id
        made = {}
        for name, priority in [
            ("low", "low"),
            ("normal-1", "normal"),
            ("urgent", "urgent"),
            ("normal-2", "normal"),
            ("high", "high"),
        ]:
            made[(await create(stack, who, task_body(pool, priority, name))).id] = name
        await admission_pass(stack, pool)
        for task_id in made:
            assert (await get(stack, who, task_id)).status == "queued", "the org's one slot is taken"
        order = []
        current = blocker.id
        for _ in made:
            await w.finish(current)  # frees the slot: exactly one more task is admitted
            current = (await w.take()).task_id
            order.append(made[current])
        await w.finish(current)
    assert order == ["urgent", "high", "normal-1", "normal-2", "low"]
    assert w.refused == []


async def test_org_fairness_round_robin_with_a_backlog(stack: Stack) -> None:
    """Org A queues 50 tasks, org B 5, while no scheduler runs (a backlog at restart). Admission takes the orgs
    in turns, so B's five are among the first ten dispatched, not behind A's fifty."""
    pool = unique_pool()
    a, b = org("big"), org("big")
    db = Database(stack.database_url, "scheduler", pool_size=2)
    relay = OutboxRelay(db, outbox)  # only enqueues; the schedulers' relays publish
    try:
        async with db.transaction() as session:
            a_ids = [
                (
                    await scheduler_creation.create_task(
                        session, relay, CreateTaskRequest(actor=a, task=task_body(pool, title=f"a{i}"))
                    )
                ).id
                for i in range(50)
            ]
            b_ids = [
                (
                    await scheduler_creation.create_task(
                        session, relay, CreateTaskRequest(actor=b, task=task_body(pool, title=f"b{i}"))
                    )
                ).id
                for i in range(5)
            ]
    finally:
        await db.dispose()
    async with schedulers(stack, pool), worker(stack, pool) as w:
        for _ in range(55):
            await w.finish((await w.take()).task_id)
    positions = [w.claimed.index(t) for t in b_ids]
    assert max(positions) < 10, positions
    assert sorted(w.claimed) == sorted(a_ids + b_ids) and w.refused == []
    # FIFO within each org
    assert [t for t in w.claimed if t in set(a_ids)] == a_ids
    assert [t for t in w.claimed if t in set(b_ids)] == b_ids


async def test_org_concurrency_limit_holds(stack: Stack) -> None:
    pool = unique_pool()
    who = org("duo")  # two at a time
    async with schedulers(stack, pool), worker(stack, pool) as w:
        ids = [(await create(stack, who, task_body(pool, title=f"t{i}"))).id for i in range(6)]
        first, second = await w.take(), await w.take()
        await admission_pass(stack, pool)  # a pass ran while both slots were held
        statuses = [(await get(stack, who, t)).status for t in ids]
        assert sorted(statuses) == ["queued"] * 4 + ["running"] * 2, statuses
        held = {first.task_id, second.task_id}
        done = 0
        while held:
            await w.finish(held.pop())
            done += 1
            if done + len(held) < len(ids):
                held.add((await w.take()).task_id)
            in_flight = [
                s for t in ids if (s := (await get(stack, who, t)).status) in ("assigned", "running")
            ]
            assert len(in_flight) <= 2, in_flight
        for t in ids:
            assert (await wait_status(stack, who, t, "completed", "failed")).status == "completed"
    assert w.claimed[:2] == ids[:2] and sorted(w.claimed) == sorted(ids)


async def test_tags_without_a_pool_stay_queued_with_a_detail(stack: Stack) -> None:
    pool = unique_pool()
    who = org("big")
    async with schedulers(stack, pool), worker(stack, pool) as w:
        lost = await create(stack, who, task_body(f"{pool}-nowhere"))
        routed = await create(stack, who, task_body(pool))
        assert (await w.take()).task_id == routed.id  # it went to the pool carrying its tag
        await w.finish(routed.id)
        await admission_pass(stack, pool)
        stuck = await get(stack, who, lost.id)
        assert stuck.status == "queued"
        assert stuck.status_detail and f"{pool}-nowhere" in stuck.status_detail, stuck.status_detail
    assert w.claimed == [routed.id]


async def test_two_scheduler_processes_dispatch_every_task_exactly_once(stack: Stack) -> None:
    pool = unique_pool()
    who = org("big")
    n = 40
    async with schedulers(stack, pool, replicas=2) as procs, worker(stack, pool) as w:
        before = (await stack.js.stream_info(subjects.TASKS_STREAM)).state.last_seq
        ids = list(
            await asyncio.gather(*(create(stack, who, task_body(pool, title=f"t{i}")) for i in range(n)))
        )
        for _ in range(n):
            await w.finish((await w.take()).task_id)
        for t in ids:
            assert (await wait_status(stack, who, t.id, "completed", "failed")).status == "completed"
        after = (await stack.js.stream_info(subjects.TASKS_STREAM)).state.last_seq
        await eventually(
            lambda: _equals(events_of(stack, who.org_id, "task.completed"), n), "every task.completed event"
        )
        alive = [p.name for p in procs if p.proc.poll() is None]
        attempts = [(await get(stack, who, t.id)).attempt for t in ids]
    assert alive == [p.name for p in procs], "both replicas ran throughout"
    assert sorted(w.claimed) == sorted(t.id for t in ids), "each task claimed once"
    assert len(set(w.msg_ids)) == len(w.msg_ids) == n and w.refused == []
    assert after - before == n, "one TASKS message per task (no second dispatch, even a deduplicated one)"
    assert await events_of(stack, who.org_id, "task.created") == n
    assert await events_of(stack, who.org_id, "task.completed") == n
    assert attempts == [1] * n, "no task needed a second attempt"


async def _equals(count: Awaitable[int], expected: int) -> bool:
    return await count == expected
