"""Pools and worker lifecycle on real processes: a worker-gateway process, scheduler processes, real NATS
JetStream and PostgreSQL, protocol workers (conftest.ProtocolWorker: the task protocol without a browser) with
identities of their own, and two real worker processes (Chromium) for the pool invite.

* two replicas (two `browserfleet-worker` processes) given one pool invite are two workers, each with its own
  id, and each removes itself on a clean shutdown;
* an organization's own pool is only ever given that organization's tasks: tasks of two organizations run
  on one org-bound pool and one platform pool with the same tags, and nothing is refused (termed);
* removing a worker mid-task gives its attempt back at once: the task completes on the other worker as
  attempt 2, and the removed worker's late result changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Actor, ById
from browserfleet_contracts.task_admin import GetTaskAttemptsRequest
from browserfleet_contracts.workers import (
    CreateInviteRequest,
    InviteCreate,
    ListWorkersRequest,
    RegisterReply,
    RegisterRequest,
    WorkerPublic,
)

from .conftest import (
    POOL_INVITE,
    Proc,
    ProtocolWorker,
    Stack,
    _spawn,
    _stop,
    create,
    eventually,
    org,
    schedulers,
    task_body,
    unique_pool,
    wait_status,
)


def admin_of(who: Actor) -> Actor:
    return Actor(org_id=who.org_id, user_id="u1", role="admin")


async def invite(stack: Stack, admin: Actor | None, **body: object) -> str:
    request = CreateInviteRequest(actor=admin, invite=InviteCreate.model_validate(body))
    return (await stack.rpc.call(endpoints.Workers.CREATE_INVITE, request)).code


async def register(stack: Stack, code: str, name: str) -> RegisterReply:
    return await stack.rpc.call(endpoints.Workers.REGISTER, RegisterRequest(invite_code=code, name=name))


@contextlib.asynccontextmanager
async def as_worker(stack: Stack, reg: RegisterReply) -> AsyncIterator[ProtocolWorker]:
    w = ProtocolWorker(stack, reg.pool, key=reg.worker_key, worker_id=reg.worker_id)
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture(scope="module")
async def routing(stack: Stack) -> AsyncIterator[None]:
    """One scheduler process for the routing tests. Its POOLS names no pool they use: every pool they run
    on is routed to because a worker registered in it."""
    async with schedulers(stack, unique_pool()):
        yield


async def workers_of(stack: Stack, admin: Actor) -> list[WorkerPublic]:
    listed = await stack.rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=admin))
    return [w for w in listed if w.org_id == admin.org_id]


async def test_two_replicas_of_one_pool_invite_are_two_workers(stack: Stack) -> None:
    """As Compose and Kubernetes run them: worker-gateway keeps PLATFORM_POOL_INVITE, and two worker processes
    are given it as WORKER_INVITE_CODE, without a state dir."""
    env = {"NATS_URL": stack.nats_url, "WORKER_INVITE_CODE": POOL_INVITE, "WORKER_SLOTS": "1"}
    replicas: list[Proc] = [
        _spawn(
            "browserfleet_worker", f"worker-replica-{i}", {**env, "WORKER_NAME": f"replica-{i}"}, stack.folder
        )
        for i in (1, 2)
    ]
    anyone = admin_of(org("big"))  # platform workers are listed to every organization

    async def replicas_listed() -> list[WorkerPublic]:
        listed = await stack.rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=anyone))
        return [w for w in listed if w.name.startswith("replica-")]

    try:

        async def both_online() -> list[WorkerPublic] | None:
            for p in replicas:
                assert p.proc.poll() is None, f"{p.name} exited:\n{p.text()[-3000:]}"
            listed = await replicas_listed()
            names = sorted((w.name, w.status) for w in listed)
            return listed if names == [("replica-1", "online"), ("replica-2", "online")] else None

        # two processes importing Playwright and launching Chromium on a loaded machine: a generous cap
        listed = await eventually(both_online, "both replicas to register and beat", cap=240)
        assert len({w.id for w in listed}) == 2, "one identity per replica"
        assert {(w.pool, w.org_id) for w in listed} == {("default", None)}
        assert all(w.device_info and w.device_info.hostname and w.device_info.platform for w in listed)
    finally:
        await asyncio.to_thread(_stop, replicas, 120)  # a clean stop, however loaded the machine
    # a clean shutdown (SIGTERM) removes a replica's identity: a restarted pod registers a new one
    assert [p.proc.returncode for p in replicas] == [0, 0], [p.text()[-2000:] for p in replicas]
    assert all("deregistered worker" in p.text() for p in replicas)
    assert await replicas_listed() == []


async def test_an_org_bound_pool_only_ever_carries_its_own_orgs_tasks(stack: Stack, routing: None) -> None:
    tag = unique_pool()
    a, b = org("big"), org("big")
    own = await register(
        stack, await invite(stack, admin_of(a), pool="office", tags=[tag], multi_use=True), "o"
    )
    shared = await register(stack, await invite(stack, None, pool=f"shared-{tag}", tags=[tag]), "s")
    assert own.pool == subjects.pool_key("office", a.org_id) and shared.pool == f"shared-{tag}"
    async with as_worker(stack, own) as wa, as_worker(stack, shared) as wp:
        a_ids = [(await create(stack, a, task_body(tag, title=f"a{i}"))).id for i in range(3)]
        b_ids = [(await create(stack, b, task_body(tag, title=f"b{i}"))).id for i in range(3)]
        for _ in a_ids:  # org A's own pool is its tasks' first choice (fewest extra tags, then its own)
            await wa.finish((await wa.take()).task_id)
        for _ in b_ids:  # org B's only candidate is the platform pool
            await wp.finish((await wp.take()).task_id)
        for who, ids in ((a, a_ids), (b, b_ids)):
            for task_id in ids:
                assert (await wait_status(stack, who, task_id, "completed", "failed")).status == "completed"
        pending = await stack.js.consumer_info(
            subjects.TASKS_STREAM, subjects.task_run_consumer(own.pool, "normal")
        )
    assert sorted(wa.claimed) == sorted(a_ids), "org A's pool carried org A's tasks and nothing else"
    assert sorted(wp.claimed) == sorted(b_ids)
    assert wa.refused == [] and wp.refused == [], "nothing was refused, so nothing was termed"
    assert pending.num_pending == 0 and pending.num_ack_pending == 0


async def test_removing_a_worker_mid_task_gives_its_attempt_back(stack: Stack, routing: None) -> None:
    tag = unique_pool()
    who = org("big")
    admin = admin_of(who)
    code = await invite(stack, admin, pool="crew", tags=[tag], multi_use=True)
    first, second = await register(stack, code, "first"), await register(stack, code, "second")
    async with (
        schedulers(stack, unique_pool()),
        as_worker(stack, first) as w1,
        as_worker(stack, second) as w2,
    ):
        task = await create(stack, who, task_body(tag, title="interrupted"))
        taken = await w1.take()
        assert (taken.task_id, taken.attempt) == (task.id, 1)
        await stack.rpc.call(endpoints.Workers.REVOKE, ById(actor=admin, id=first.worker_id))
        again = await w2.take()  # given back at once: no lease had to run out
        assert (again.task_id, again.attempt) == (task.id, 2)
        await w1.finish(task.id)  # the removed worker's late result for attempt 1
        await w2.finish(task.id)
        done = await wait_status(stack, who, task.id, "completed", "failed")
        attempts = await stack.rpc.call(
            endpoints.Scheduler.TASK_ATTEMPTS, GetTaskAttemptsRequest(actor=who, task_id=task.id)
        )
    assert (done.status, done.attempt, done.worker_id) == ("completed", 2, second.worker_id)
    assert [(x.attempt, x.status, x.worker_id) for x in attempts] == [
        (1, "lost", first.worker_id),
        (2, "completed", second.worker_id),
    ]
    assert f"worker {first.worker_id} was removed" in (attempts[0].error or "")
    assert first.worker_id not in {w.id for w in await workers_of(stack, admin)}
