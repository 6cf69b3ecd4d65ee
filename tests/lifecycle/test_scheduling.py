"""Admission and dispatch on real scheduler processes (`python -m browserfleet_scheduler run`, one or two of
them), a real worker-gateway process, real NATS JetStream and real PostgreSQL.

The worker here is a test worker that speaks the task protocol (CONTRIBUTING.md, "The task protocol") without a
browser: it pulls from its pool's durable consumers urgent-first, claims the attempt with its worker key,
publishes the result on TASK_UPDATES and then acks the TASKS message. Each test gets its own pool (a unique tag),
so its TASKS consumers carry nothing of another test's.

Barriers instead of waiting: to show that something was *not* admitted, a test creates a task of an unlimited
org afterwards and waits until that one is dispatched, which proves an admission pass ran in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import (
    ClaimReply,
    ClaimRequest,
    CreateTaskRequest,
    GetTaskRequest,
    TaskCreate,
    TaskDispatch,
    TaskPublic,
    TaskUpdateMessage,
)
from browserfleet_contracts.workers import CreateInviteRequest, InvitePublic, RegisterReply, RegisterRequest
from browserfleet_core.db import Database
from browserfleet_core.messaging import RpcClient, connect, ensure_streams
from browserfleet_core.migrations import upgrade
from browserfleet_core.outbox import OutboxRelay
from browserfleet_scheduler import service as scheduler_service
from browserfleet_scheduler.models import outbox
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

T = TypeVar("T")
WAIT_CAP = 60.0  # hang protection only; nothing here asserts on speed
PLANS = {"solo": 1, "duo": 2, "big": 1000}


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_CAP
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


# --- processes ------------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _spawn(module: str, name: str, env: dict[str, str], folder: Path) -> Proc:
    log = folder / f"{name}.log"
    full = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL")}
    full.update(env, PYTHONUNBUFFERED="1", SERVICE_NAME=name.split("-")[0], LOG_LEVEL="INFO")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "run"],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, proc, log)


async def _ready(p: Proc, marker: str) -> None:
    async def probe() -> bool:
        if p.proc.poll() is not None:
            raise AssertionError(f"{p.name} exited ({p.proc.returncode}):\n{p.text()[-3000:]}")
        return marker in p.text()

    await eventually(probe, f"{p.name} to start")


def _stop(procs: list[Proc]) -> None:
    for p in procs:
        if p.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.proc.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.proc.wait(15)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()


@dataclass
class Stack:
    nats_url: str
    database_url: str
    folder: Path
    nc: NatsClient
    rpc: RpcClient
    worker_key: str
    worker_id: str

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scheduling")


@pytest.fixture(scope="module")
def worker_gateway(nats_url: str, database_url: str, folder: Path) -> Iterator[Proc]:
    upgrade("browserfleet_scheduler", database_url)
    upgrade("browserfleet_worker_gateway", database_url)
    p = _spawn(
        "browserfleet_worker_gateway",
        "worker-gateway",
        {"NATS_URL": nats_url, "DATABASE_URL": database_url},
        folder,
    )
    yield p
    _stop([p])


@pytest.fixture(scope="module")
async def stack(nats_url: str, database_url: str, folder: Path, worker_gateway: Proc) -> AsyncIterator[Stack]:
    await _ready(worker_gateway, "worker-gateway serving")
    nc = await connect(nats_url, name="scheduling-tests")
    try:
        await ensure_streams(nc.jetstream())
        rpc = RpcClient(nc, timeout=15)
        invite: InvitePublic = await rpc.call(
            subjects.Workers.CREATE_INVITE, CreateInviteRequest(), InvitePublic
        )
        reg: RegisterReply = await rpc.call(
            subjects.Workers.REGISTER,
            RegisterRequest(invite_code=invite.code, name="test-worker"),
            RegisterReply,
        )
        yield Stack(nats_url, database_url, folder, nc, rpc, reg.worker_key, reg.worker_id)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def schedulers(stack: Stack, pool: str, replicas: int = 1) -> AsyncIterator[list[Proc]]:
    """`replicas` scheduler processes serving the pools `default`, `pool` (tag `pool`) and the test's barrier
    pool (nobody consumes it)."""
    env = {
        "NATS_URL": stack.nats_url,
        "DATABASE_URL": stack.database_url,
        "MIGRATE_ON_START": "false",
        "POOLS": json.dumps({"default": [], pool: [pool], barrier(pool): [barrier(pool)]}),
        "PLAN_CONCURRENCY": json.dumps(PLANS),
        "ADMISSION_POLL_SECONDS": "0.2",
        "OUTBOX_POLL_SECONDS": "0.2",
        "RETRY_BACKOFF_SECONDS": "0",
    }
    procs = [
        _spawn("browserfleet_scheduler", f"scheduler-{pool}-{i}", env, stack.folder) for i in range(replicas)
    ]
    try:
        for p in procs:
            await _ready(p, "scheduler serving on")
        yield procs
    finally:
        await asyncio.to_thread(_stop, procs)


# --- the test worker --------------------------------------------------------------------------------
@dataclass
class ProtocolWorker:
    """Speaks the task protocol without a browser. `take()` pulls the next dispatch urgent-first and claims
    it; `finish()` publishes the result, then acks the TASKS message, as the real worker does."""

    stack: Stack
    pool: str
    claimed: list[str] = field(default_factory=list)
    refused: list[tuple[str, str | None]] = field(default_factory=list)
    msg_ids: list[str] = field(default_factory=list)
    _subs: dict[str, Any] = field(default_factory=dict)
    _held: dict[str, tuple[Msg, TaskDispatch]] = field(default_factory=dict)

    async def _sub(self, priority: str) -> Any:
        if priority not in self._subs:
            self._subs[priority] = await self.stack.js.pull_subscribe_bind(
                durable=subjects.task_run_consumer(self.pool, priority), stream=subjects.TASKS_STREAM
            )
        return self._subs[priority]

    async def _pull(self) -> Msg | None:
        for priority in subjects.PRIORITIES:
            sub = await self._sub(priority)
            with contextlib.suppress(TimeoutError):
                batch: list[Msg] = await sub.fetch(batch=1, timeout=0.1)
                return batch[0]
        return None

    async def take(self) -> TaskDispatch:
        """The next dispatch this worker was granted (refused ones are termed, as a worker does)."""

        async def probe() -> TaskDispatch | None:
            msg = await self._pull()
            if msg is None:
                return None
            self.msg_ids.append(msg.headers.get("Nats-Msg-Id", "") if msg.headers else "")
            dispatch = TaskDispatch.model_validate_json(msg.data)
            req = ClaimRequest(
                task_id=dispatch.task_id,
                attempt=dispatch.attempt,
                worker_key=self.stack.worker_key,
                delivery=msg.metadata.num_delivered,
            )
            reply: ClaimReply = await self.stack.rpc.call(subjects.Scheduler.CLAIM, req, ClaimReply)
            if not reply.granted:
                self.refused.append((dispatch.task_id, reply.reason))
                await msg.term()
                return None
            self.claimed.append(dispatch.task_id)
            self._held[dispatch.task_id] = (msg, dispatch)
            return dispatch

        return await eventually(probe, f"a dispatch on pool {self.pool}")

    async def finish(self, task_id: str) -> None:
        msg, dispatch = self._held.pop(task_id)
        result = TaskUpdateMessage(
            task_id=task_id,
            attempt=dispatch.attempt,
            worker_id=self.stack.worker_id,
            kind="result",
            status="completed",
            result={"ok": True},
            execution_time_seconds=0.0,
        )
        await self.stack.js.publish(
            subjects.task_update(task_id),
            result.model_dump_json().encode(),
            headers={"Nats-Msg-Id": f"{task_id}:{dispatch.attempt}:result"},
        )
        await msg.ack()

    async def close(self) -> None:
        for sub in self._subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


@contextlib.asynccontextmanager
async def worker(stack: Stack, pool: str) -> AsyncIterator[ProtocolWorker]:
    w = ProtocolWorker(stack, pool)
    try:
        yield w
    finally:
        await w.close()


# --- helpers --------------------------------------------------------------------------------------
def org(plan: str) -> Actor:
    return Actor(org_id=f"org-{uuid.uuid4().hex[:10]}", user_id="u1", role="admin", plan=plan)


def task_body(pool: str | None, priority: str = "normal", title: str | None = None) -> TaskCreate:
    return TaskCreate.model_validate(
        {
            "title": title,
            "priority": priority,
            "worker_tags": [pool] if pool else [],
            "steps": [{"action": "navigate", "url": "https://example.test/"}],
        }
    )


async def create(stack: Stack, who: Actor, body: TaskCreate) -> TaskPublic:
    return await stack.rpc.call(
        subjects.Scheduler.CREATE_TASK, CreateTaskRequest(actor=who, task=body), TaskPublic
    )


async def get(stack: Stack, who: Actor, task_id: str) -> TaskPublic:
    return await stack.rpc.call(
        subjects.Scheduler.GET_TASK, GetTaskRequest(actor=who, task_id=task_id), TaskPublic
    )


async def wait_status(stack: Stack, who: Actor, task_id: str, *statuses: str) -> TaskPublic:
    async def probe() -> TaskPublic | None:
        task = await get(stack, who, task_id)
        return task if task.status in statuses else None

    return await eventually(probe, f"{task_id} to become {'/'.join(statuses)}")


def barrier(pool: str) -> str:
    return f"{pool}-barrier"


async def admission_pass(stack: Stack, pool: str) -> None:
    """Barrier: a task of an unlimited org, dispatched only once an admission pass has run after this call
    (to a pool of its own that no worker consumes, so it never disturbs another test)."""
    who = org("big")
    probe = await create(stack, who, task_body(barrier(pool), title="barrier"))
    await wait_status(stack, who, probe.id, "assigned")


def unique_pool() -> str:
    return f"p{uuid.uuid4().hex[:8]}"


async def events_of(stack: Stack, org_id: str, event: str) -> int:
    subject = subjects.event(org_id, event)
    info = await stack.js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


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
                    await scheduler_service.create_task(
                        session, relay, CreateTaskRequest(actor=a, task=task_body(pool, title=f"a{i}"))
                    )
                ).id
                for i in range(50)
            ]
            b_ids = [
                (
                    await scheduler_service.create_task(
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
