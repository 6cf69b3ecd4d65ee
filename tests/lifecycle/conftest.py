"""The lifecycle package's platform parts, shared by its modules for the whole package: a worker-gateway
process (configured with the platform pool's invite, as Compose and Kubernetes configure it), a connection,
scheduler processes on demand, and ProtocolWorker, a test worker that speaks the task protocol without a
browser (CONTRIBUTING.md, "The task protocol"): it pulls from its pool's durable consumers urgent-first,
claims the attempt with its worker key, publishes the result on TASK_UPDATES and then acks the TASKS message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from browserfleet_contracts import endpoints, subjects
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
from browserfleet_core.messaging import RpcClient, connect
from browserfleet_core.migrations import upgrade
from browserfleet_core.streams import ensure_streams
from browserfleet_devkit.polling import eventually
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

T = TypeVar("T")
WAIT_CAP = 60.0  # hang protection only; nothing here asserts on speed
PLANS = {"solo": 1, "duo": 2, "big": 1000}
POOL_INVITE = "inv_lifecycle-platform-pool-invite-0123456789"  # worker-gateway's PLATFORM_POOL_INVITE


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


def _stop(procs: list[Proc], grace: float = 15) -> None:
    for p in procs:
        if p.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.proc.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.proc.wait(grace)
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


@pytest.fixture(scope="package")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scheduling")


@pytest.fixture(scope="package")
def worker_gateway(nats_url: str, database_url: str, folder: Path) -> Iterator[Proc]:
    upgrade("browserfleet_scheduler", database_url)
    upgrade("browserfleet_worker_gateway", database_url)
    p = _spawn(
        "browserfleet_worker_gateway",
        "worker-gateway",
        # configured as Compose and Kubernetes configure it: the platform pool's invite for worker replicas
        {"NATS_URL": nats_url, "DATABASE_URL": database_url, "PLATFORM_POOL_INVITE": POOL_INVITE},
        folder,
    )
    yield p
    _stop([p])


@pytest.fixture(scope="package")
async def stack(nats_url: str, database_url: str, folder: Path, worker_gateway: Proc) -> AsyncIterator[Stack]:
    await _ready(worker_gateway, "worker-gateway serving")
    nc = await connect(nats_url, name="scheduling-tests")
    try:
        await ensure_streams(nc.jetstream())
        rpc = RpcClient(nc, timeout=15)
        invite: InvitePublic = await rpc.call(endpoints.Workers.CREATE_INVITE, CreateInviteRequest())
        reg: RegisterReply = await rpc.call(
            endpoints.Workers.REGISTER, RegisterRequest(invite_code=invite.code, name="test-worker")
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
        "POOL_REGISTRY_SECONDS": "0.2",  # a pool registered at worker-gateway is routed to soon
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
    # a worker identity of its own (registered by the test); default: the stack's platform worker
    key: str | None = None
    worker_id: str | None = None
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
                worker_key=self.key or self.stack.worker_key,
                delivery=msg.metadata.num_delivered,
            )
            reply: ClaimReply = await self.stack.rpc.call(endpoints.Scheduler.CLAIM, req)
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
            worker_id=self.worker_id or self.stack.worker_id,
            kind="result",
            status="completed",
            result={"ok": True},
            execution_time_seconds=0.0,
        )
        await self.stack.js.publish(
            subjects.task_update(self.worker_id or self.stack.worker_id, task_id),
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
    return await stack.rpc.call(endpoints.Scheduler.CREATE_TASK, CreateTaskRequest(actor=who, task=body))


async def get(stack: Stack, who: Actor, task_id: str) -> TaskPublic:
    return await stack.rpc.call(endpoints.Scheduler.GET_TASK, GetTaskRequest(actor=who, task_id=task_id))


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
