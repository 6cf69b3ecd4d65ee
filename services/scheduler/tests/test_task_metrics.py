"""`browserfleet_tasks_total{status}` against the running scheduler (real NATS, PostgreSQL): one increment per
committed transition, whichever path wrote it, and none for a refused or rolled-back change."""

from __future__ import annotations

import uuid

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.task_admin import CancelTaskRequest
from browserfleet_contracts.tasks import CreateTaskRequest
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_scheduler import creation
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.models import Task
from browserfleet_scheduler.state import STATUSES
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from sqlmodel import col, select

from .conftest import (
    DictAuthenticator,
    actor,
    claim,
    create_assigned,
    publish_update,
    result_update,
    steps_task,
    updates_consumed,
    wait_status,
)


def counts() -> dict[str, float]:
    return {
        status: REGISTRY.get_sample_value("browserfleet_tasks_total", {"status": status}) or 0.0
        for status in STATUSES
    }


def moved(before: dict[str, float]) -> dict[str, float]:
    after = counts()
    return {status: after[status] - before[status] for status in STATUSES if after[status] != before[status]}


async def others(scheduler: SchedulerApp, task_id: str = "") -> set[tuple[str, str, int]]:
    """(id, status, attempt) of every task but `task_id`: the session's scheduler is shared, so a window in
    which one of them moved (an earlier test's task timing out, say) counted that move too."""
    async with scheduler.db.transaction() as session:
        stmt = select(Task.id, Task.status, Task.attempt).where(col(Task.id) != task_id)
        return {(r[0], r[1], r[2]) for r in (await session.exec(stmt)).all()}


async def test_a_task_lifecycle_counts_each_transition_once(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext, scheduler: SchedulerApp
) -> None:
    """create -> assigned -> running -> (its browser crashed: back to queued) -> assigned -> running ->
    completed; then a redelivered result and a refused cancel, which change nothing and count nothing."""
    moves: set[tuple[str, str, int]] = set()
    for _ in range(5):  # a window in which another task moved is measured again
        who = actor(role="admin")
        still, before = await others(scheduler), counts()
        task = await create_assigned(rpc, who, max_attempts=2)
        key, identity = authenticator.add()
        assert (await claim(rpc, task.id, key, 1, delivery=1)).granted
        crash = result_update(
            task.id, identity.worker_id, 1, status="failed", error_message="browser gone", retryable=True
        )
        await publish_update(js, crash, f"{task.id}:1:result")
        assert (await wait_status(rpc, who, task.id, "assigned")).attempt == 2
        assert (await claim(rpc, task.id, key, 2, delivery=1)).granted
        done = result_update(task.id, identity.worker_id, 2, status="completed", result={"ok": True})
        await publish_update(js, done, f"{task.id}:2:result")
        await wait_status(rpc, who, task.id, "completed")

        # refused: a result redelivered under another id, a claim of a finished task, a cancel of it
        await updates_consumed(js, await publish_update(js, done, f"{task.id}:2:result:again"))
        assert not (await claim(rpc, task.id, key, 2, delivery=2)).granted
        with pytest.raises(ServiceError) as refused:
            await rpc.call(endpoints.Scheduler.CANCEL_TASK, CancelTaskRequest(actor=who, task_id=task.id))
        assert refused.value.status == 409

        delta = moved(before)
        moves = await others(scheduler, task.id) ^ still
        if moves:
            continue
        assert delta == {"queued": 2, "assigned": 2, "running": 2, "completed": 1}
        return
    pytest.fail(f"other tasks moved during every window, e.g. {sorted(moves)[:6]}")


class Refused(Exception):
    pass


async def test_a_rolled_back_change_is_not_counted(scheduler: SchedulerApp) -> None:
    def request() -> CreateTaskRequest:
        # no pool has its tag: the task stays queued, out of the other tests' way
        task = steps_task(worker_tags=[f"metrics-{uuid.uuid4().hex[:8]}"])
        return CreateTaskRequest(actor=actor(), task=task, idempotency_key=f"metrics-{uuid.uuid4().hex}")

    async def create_then_fail() -> None:
        async with scheduler.db.transaction() as session:
            await creation.create_task(session, scheduler.relay, request())
            raise Refused

    before = counts()
    with pytest.raises(Refused):
        await create_then_fail()
    assert moved(before) == {}, "a create rolled back is no task entering `queued`"
    async with scheduler.db.transaction() as session:
        await creation.create_task(session, scheduler.relay, request())
    assert moved(before).get("queued") == 1, "the same create committed is counted"
