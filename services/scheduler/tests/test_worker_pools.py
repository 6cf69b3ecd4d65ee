"""Routing by registered pools (an organization's own pools are only ever its own tasks' candidates), the
registry cache in front of worker-gateway, and a removed worker's running attempt given back at once on
worker.revoked (the running scheduler, real NATS and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.events import EventEnvelope, EventType
from browserfleet_contracts.task_admin import GetTaskAttemptsRequest
from browserfleet_contracts.tasks import ClaimRequest
from browserfleet_contracts.workers import PoolInfo, WorkerEventData, worker_event_id
from browserfleet_core.db import utcnow
from browserfleet_core.errors import ServiceError, Unavailable
from browserfleet_core.messaging import RpcClient
from browserfleet_scheduler.policy import Policy, Pool
from browserfleet_scheduler.pools import PoolRegistry
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from .conftest import DictAuthenticator, actor, create_assigned, eventually, status_of, wait_status

PLATFORM = {"default": frozenset[str](), "gpu": frozenset({"gpu"})}


# --- routing -----------------------------------------------------------------------------------------------
def test_an_orgs_own_pool_is_a_candidate_for_its_tasks_only() -> None:
    policy = Policy(pools=PLATFORM)
    registered = [
        Pool("office_org-a", "org-a", frozenset()),
        Pool("gpu_org-b", "org-b", frozenset({"gpu", "cuda"})),
        Pool("arm", None, frozenset({"arm"})),
    ]
    # an org's own plain pool beats the platform's plain pool; nobody else is offered it
    assert policy.route([], "org-a", registered) == "office_org-a"
    assert policy.route([], "org-b", registered) == "default"
    assert policy.route([], "org-c", registered) == "default"
    # the fewest extra tags still comes first: org-b's plain task does not take its GPU pool's slot
    assert policy.route(["gpu"], "org-b", registered) == "gpu"
    assert policy.route(["cuda"], "org-b", registered) == "gpu_org-b"
    assert policy.route(["cuda"], "org-a", registered) is None, "another org's pool is never a candidate"
    assert policy.route(["arm"], "org-a", registered) == "arm", "a registered platform pool serves everyone"


def test_a_registered_platform_pool_says_what_its_workers_have() -> None:
    """POOLS is the default; the workers that registered in a pool of that name are the truth."""
    policy = Policy(pools=PLATFORM)
    assert policy.route(["gpu"]) == "gpu"
    assert policy.route(["gpu"], "org-a", [Pool("gpu", None, frozenset())]) is None


async def test_the_registry_is_asked_once_per_ttl_and_survives_an_outage() -> None:
    now = [0.0]
    answers: list[list[PoolInfo] | Exception] = [
        [PoolInfo(key="a", name="a", org_id=None, tags=["x"], workers=1, online=1)],
        Unavailable("worker-gateway is down"),
        [
            PoolInfo(key="a", name="a", org_id=None, tags=["x"], workers=1, online=1),
            PoolInfo(key="b_org", name="b", org_id="org", tags=[], workers=2, online=0),
        ],
    ]
    ensured: list[str] = []

    async def fetch() -> list[PoolInfo]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def ensure(pool: str) -> None:
        ensured.append(pool)

    registry = PoolRegistry(fetch, ttl=5, ensure=ensure, clock=lambda: now[0])
    first = await registry.snapshot()
    assert first == (Pool("a", None, frozenset({"x"})),)
    assert await registry.snapshot() == first and len(answers) == 2, "within the TTL: not asked again"
    now[0] = 6
    assert await registry.snapshot() == first, "worker-gateway down: the last answer keeps routing"
    now[0] = 12
    assert [p.key for p in await registry.snapshot()] == ["a", "b_org"]
    assert ensured == ["a", "b_org"], "each new pool's consumers are made once"


# --- a removed worker's attempt ----------------------------------------------------------------------------
async def _revoked(js: JetStreamContext, org_id: str, worker_id: str) -> None:
    """worker.revoked as worker-gateway's outbox publishes it."""
    data = WorkerEventData(
        worker_id=worker_id, worker_name="w", last_seen=None, pool="default", status="revoked"
    )
    msg_id = worker_event_id(worker_id, EventType.WORKER_REVOKED)
    envelope = EventEnvelope(
        id=msg_id,
        type=EventType.WORKER_REVOKED,
        org_id=org_id,
        occurred_at=utcnow(),
        data=data.model_dump(mode="json"),
    )
    await js.publish(
        subjects.event(org_id, EventType.WORKER_REVOKED),
        envelope.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id},
    )


async def test_a_revoked_workers_running_attempt_is_given_back_and_it_is_told_to_stop(
    rpc: RpcClient, nc: NatsClient, js: JetStreamContext, authenticator: DictAuthenticator
) -> None:
    who = actor()
    task = await create_assigned(rpc, who, max_attempts=2)
    key, removed = authenticator.add(who.org_id)
    other_key, other = authenticator.add(who.org_id)
    claim = ClaimRequest(task_id=task.id, attempt=1, worker_key=key, delivery=1)
    assert (await rpc.call(endpoints.Scheduler.CLAIM, claim)).granted
    cancels: asyncio.Queue[str] = asyncio.Queue()

    async def on_cancel(msg: object) -> None:
        await cancels.put(getattr(msg, "subject", ""))

    sub = await nc.subscribe(subjects.task_cancel(task.id), cb=on_cancel)
    await nc.flush()
    try:
        await _revoked(js, who.org_id, removed.worker_id)
        again = await wait_status(rpc, who, task.id, "assigned")
        assert again.attempt == 2
        assert await asyncio.wait_for(cancels.get(), 30) == subjects.task_cancel(task.id)
    finally:
        await sub.unsubscribe()
    # the removed worker's key is refused with an error (it hands the message back, never drops it)
    del authenticator.keys[key]
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            endpoints.Scheduler.CLAIM, ClaimRequest(task_id=task.id, attempt=2, worker_key=key, delivery=1)
        )
    assert exc.value.status == 401
    # another worker completes it on the new attempt
    retry = ClaimRequest(task_id=task.id, attempt=2, worker_key=other_key, delivery=1)
    assert (await rpc.call(endpoints.Scheduler.CLAIM, retry)).granted
    attempts = await rpc.call(
        endpoints.Scheduler.TASK_ATTEMPTS, GetTaskAttemptsRequest(actor=who, task_id=task.id)
    )
    assert [(a.attempt, a.status, a.worker_id) for a in attempts] == [
        (1, "lost", removed.worker_id),
        (2, "running", other.worker_id),
    ]
    assert f"worker {removed.worker_id} was removed" in (attempts[0].error or "")


async def test_the_last_attempt_of_a_revoked_worker_fails_with_the_cause(
    rpc: RpcClient, js: JetStreamContext, authenticator: DictAuthenticator
) -> None:
    who = actor()
    task = await create_assigned(rpc, who, max_attempts=1)
    key, removed = authenticator.add(who.org_id)
    claim = ClaimRequest(task_id=task.id, attempt=1, worker_key=key, delivery=1)
    assert (await rpc.call(endpoints.Scheduler.CLAIM, claim)).granted
    await _revoked(js, who.org_id, removed.worker_id)
    await _revoked(js, who.org_id, removed.worker_id)  # a re-publication within the window: dropped

    async def failed() -> str | None:
        t = await status_of(rpc, who, task.id)
        return t.error_message if t.status == "failed" else None

    message = await eventually(failed, "the task to fail")
    assert f"worker {removed.worker_id} was removed" in message and "max_attempts=1" in message


async def test_a_create_never_waits_for_the_registry_once_it_has_answered() -> None:
    """`current()` (a create's) answers at once: before any answer None (the create asks `snapshot()`), after
    it the last answer, a stale one while its refresh runs aside; `snapshot()` (the pass's) waits for that
    refresh."""
    now = [0.0]
    gate = asyncio.Event()
    answers = [
        [PoolInfo(key="a", name="a", org_id=None, tags=["x"], workers=1, online=1)],
        [PoolInfo(key="b", name="b", org_id=None, tags=["y"], workers=1, online=1)],
    ]

    async def fetch() -> list[PoolInfo]:
        if len(answers) == 1:
            await gate.wait()  # worker-gateway is slow to answer the refresh
        return answers.pop(0)

    registry = PoolRegistry(fetch, ttl=5, clock=lambda: now[0])
    assert registry.current() is None
    first = await registry.snapshot()
    assert registry.current() == first
    now[0] = 6
    assert registry.current() == first, "stale: still answered at once"
    assert registry.current() == first and len(answers) == 1, "one refresh in flight, not one per create"
    pending = asyncio.ensure_future(registry.snapshot())
    await asyncio.sleep(0.01)
    assert not pending.done(), "the pass waits for the refresh in flight"
    gate.set()
    assert [p.key for p in await pending] == ["b"]
    assert [p.key for p in registry.current() or ()] == ["b"]
