"""Fixtures: one migrated database and one running scheduler (real NATS, real PostgreSQL) for the package."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
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
    TaskPublic,
    TaskUpdateMessage,
)
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit import polling
from browserfleet_devkit.testing import QUICK_SCHEDULER, ServiceSchema
from browserfleet_scheduler.app import PACKAGE, SCHEMA, SchedulerApp
from browserfleet_scheduler.handlers import UPDATES_DURABLE
from browserfleet_scheduler.settings import SchedulerSettings
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

T = TypeVar("T")
# a cap so a broken test fails instead of hanging; no test asserts on speed
WAIT_CAP = 30.0


class DictAuthenticator:
    """Injected in place of the worker-gateway call: worker keys known to this test run."""

    def __init__(self) -> None:
        self.keys: dict[str, WorkerIdentity] = {}

    def add(self, org_id: str | None = None) -> tuple[str, WorkerIdentity]:
        key = f"sk_worker_{uuid.uuid4().hex}"
        identity = WorkerIdentity(worker_id=str(uuid.uuid4()), org_id=org_id, name="w", tags=[])
        self.keys[key] = identity
        return key, identity

    async def authenticate(self, worker_key: str) -> WorkerIdentity | None:
        return self.keys.get(worker_key)


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll `probe` until it returns something truthy (hang protection only, not a speed check)."""
    return await polling.eventually(probe, what, WAIT_CAP)


def settings_for(nats_url: str, database_url: str) -> SchedulerSettings:
    return SchedulerSettings(
        nats_url=nats_url, database_url=database_url, pools={"default": [], "gpu": ["gpu"]}, **QUICK_SCHEDULER
    )


@pytest.fixture(scope="session")
def service_schema() -> ServiceSchema:
    return ServiceSchema(PACKAGE, SCHEMA)


@pytest.fixture(scope="session")
def authenticator() -> DictAuthenticator:
    return DictAuthenticator()


@pytest.fixture(scope="session")
async def scheduler(
    nats_url: str, migrated: str, authenticator: DictAuthenticator
) -> AsyncIterator[SchedulerApp]:
    app = SchedulerApp(settings_for(nats_url, migrated), authenticator=authenticator)
    await app.start()
    yield app
    await app.stop()


@pytest.fixture(scope="session")
def rpc(nc: NatsClient, scheduler: SchedulerApp) -> RpcClient:
    return RpcClient(nc, timeout=10.0)


def actor(org_id: str | None = None, role: str = "user") -> Actor:
    return Actor(org_id=org_id or f"org-{uuid.uuid4().hex[:12]}", user_id="u1", role=role)


def steps_task(**extra: Any) -> TaskCreate:
    return TaskCreate(steps=[{"action": "navigate", "url": "https://example.test/"}], **extra)


async def create(rpc: RpcClient, who: Actor, key: str | None = None, **extra: Any) -> TaskPublic:
    req = CreateTaskRequest(actor=who, task=steps_task(**extra), idempotency_key=key)
    return await rpc.call(endpoints.Scheduler.CREATE_TASK, req)


async def status_of(rpc: RpcClient, who: Actor, task_id: str) -> TaskPublic:
    req = GetTaskRequest(actor=who, task_id=task_id)
    return await rpc.call(endpoints.Scheduler.GET_TASK, req)


async def wait_status(rpc: RpcClient, who: Actor, task_id: str, *statuses: str) -> TaskPublic:
    async def probe() -> TaskPublic | None:
        task = await status_of(rpc, who, task_id)
        return task if task.status in statuses else None

    return await eventually(probe, f"task {task_id} to become {'/'.join(statuses)}")


async def create_assigned(rpc: RpcClient, who: Actor, key: str | None = None, **extra: Any) -> TaskPublic:
    """Create a task and wait until admission has dispatched it (only then may a worker claim it)."""
    task = await create(rpc, who, key, **extra)
    return await wait_status(rpc, who, task.id, "assigned")


async def new_assigned(
    rpc: RpcClient, authenticator: DictAuthenticator, **extra: Any
) -> tuple[Actor, TaskPublic, str, WorkerIdentity]:
    """A dispatched task of a new org, and a new worker to claim it: (org's actor, task, worker key, worker)."""
    who = actor()
    task = await create_assigned(rpc, who, **extra)
    key, identity = authenticator.add()
    return who, task, key, identity


async def claim(
    rpc: RpcClient, task_id: str, key: str, attempt: int = 1, delivery: int | None = None
) -> ClaimReply:
    req = ClaimRequest(task_id=task_id, attempt=attempt, worker_key=key, delivery=delivery)
    return await rpc.call(endpoints.Scheduler.CLAIM, req)


def result_update(task_id: str, worker_id: str, attempt: int = 1, **report: Any) -> TaskUpdateMessage:
    """A worker's `result` on its attempt; `report`: its status and whatever else it reports."""
    return TaskUpdateMessage(task_id=task_id, attempt=attempt, worker_id=worker_id, kind="result", **report)


async def publish_update(js: JetStreamContext, update: TaskUpdateMessage, msg_id: str | None = None) -> int:
    """`update` on its worker's TASK_UPDATES subject, as the worker sends it (`msg_id`: the id JetStream
    dedupes by); returns its stream sequence."""
    ack = await js.publish(
        subjects.task_update(update.worker_id, update.task_id),
        update.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id} if msg_id is not None else None,
    )
    return int(ack.seq)


async def updates_consumed(js: JetStreamContext, seq: int) -> None:
    """Until the scheduler's update consumer has settled every message up to stream sequence `seq`."""

    async def probe() -> bool:
        info = await js.consumer_info(subjects.TASK_UPDATES_STREAM, UPDATES_DURABLE)
        return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= seq

    await eventually(probe, f"the update consumer to settle stream sequence {seq}")


async def take_dispatch(
    js: JetStreamContext, msg_id: str, priority: str = "normal", pool: str = subjects.DEFAULT_POOL
) -> Msg:
    """Pull from the pool's shared durable consumer until the message with `msg_id` arrives; other
    messages (another test's leftovers) are handed back untouched."""
    sub = await js.pull_subscribe_bind(
        durable=subjects.task_run_consumer(pool, priority), stream=subjects.TASKS_STREAM
    )
    try:

        async def probe() -> Msg | None:
            try:
                batch = await sub.fetch(batch=50, timeout=1.0)
            except TimeoutError:
                return None
            found = None
            for m in batch:
                if m.headers and m.headers.get("Nats-Msg-Id") == msg_id and found is None:
                    found = m
                else:
                    await m.nak()
            if found is not None:
                await found.ack()
            return found

        return await eventually(probe, f"dispatch {msg_id}")
    finally:
        await sub.unsubscribe()


async def subject_count(js: JetStreamContext, stream: str, subject: str) -> int:
    try:
        info = await js.stream_info(stream, subjects_filter=subject)
    except NotFoundError:
        return 0
    return int((info.state.subjects or {}).get(subject, 0))
