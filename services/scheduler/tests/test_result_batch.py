"""Results recorded in one statement (`outcomes.record_updates` -> `repository.finish_running`): the same task
row, attempt row and event as the transaction path (`outcomes.apply_updates`) writes; a stale, foreign or
repeated result changes nothing; what the statement does not write is left to the transaction path (real
PostgreSQL, real NATS)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from browserfleet_contracts.tasks import ArtifactRef, TaskUpdateMessage
from browserfleet_core.messaging import RpcClient
from browserfleet_scheduler import outcomes
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.models import Task, TaskAttempt, outbox
from sqlalchemy import select as sa_select
from sqlmodel import select

from .conftest import DictAuthenticator, claim, create_assigned, new_assigned, result_update, status_of


def _ref(task_id: str, attempt: int, name: str) -> ArtifactRef:
    return ArtifactRef(name=name, object_name=f"{task_id}/{attempt}/{name}", content_type="image/png", size=3)


class PathSpy:
    """Counts the updates that reach the transaction path."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.updates: list[TaskUpdateMessage] = []
        real = outcomes.apply_updates

        async def spy(session: Any, relay: Any, msgs: list[TaskUpdateMessage], *a: Any) -> bool:
            self.updates.extend(msgs)
            return await real(session, relay, msgs, *a)

        monkeypatch.setattr(outcomes, "apply_updates", spy)


async def _rows(app: SchedulerApp, task_id: str) -> tuple[Task, list[TaskAttempt], list[Any]]:
    async with app.db.transaction() as session:
        task = (await session.exec(select(Task).where(Task.id == task_id))).one()
        attempts = list((await session.exec(select(TaskAttempt).where(TaskAttempt.task_id == task_id))).all())
        events = (
            await session.execute(
                sa_select(outbox.c.subject, outbox.c.msg_id, outbox.c.payload)
                .where(outbox.c.msg_id.like(f"{task_id}:%"))
                .order_by(outbox.c.id)
            )
        ).all()
    return task, attempts, list(events)


def _same(value: Any, task_id: str) -> Any:
    """`value` with the task's id (in artifact names, event ids) made neutral, to compare two tasks."""
    return json.loads(json.dumps(value, default=str).replace(task_id, "<task>"))


@pytest.mark.parametrize(
    "report",
    [
        {"status": "completed", "result": {"title": "é", "n": [1, 2.5, None], "deep": {"x": True}}},
        {"status": "completed", "result": None, "execution_time_seconds": 1.25},
        {"status": "failed", "error_message": "step 1: element not found", "error_step": 1},
        {"status": "timed_out", "error_message": "ran past its timeout"},
    ],
)
async def test_one_statement_writes_what_the_transaction_path_writes(
    scheduler: SchedulerApp,
    rpc: RpcClient,
    authenticator: DictAuthenticator,
    monkeypatch: pytest.MonkeyPatch,
    report: dict[str, Any],
) -> None:
    who, one, key, identity = await new_assigned(rpc, authenticator)
    other = await create_assigned(rpc, who)
    for task in (one, other):
        assert (await claim(rpc, task.id, key)).granted

    def update(task_id: str) -> TaskUpdateMessage:
        refs = [_ref(task_id, 1, "shot.png"), _ref("another-task", 1, "x.png")]  # the foreign one is dropped
        return result_update(task_id, identity.worker_id, artifacts=refs, **report)

    spy = PathSpy(monkeypatch)
    assert await outcomes.record_updates(
        scheduler.db, scheduler.relay, [update(one.id)], scheduler.runtime.policy
    )
    assert spy.updates == []  # written by the statement
    async with scheduler.db.transaction() as session:
        assert await outcomes.apply_updates(
            session, scheduler.relay, [update(other.id)], scheduler.runtime.policy
        )

    fast, slow = await _rows(scheduler, one.id), await _rows(scheduler, other.id)
    columns = ("status", "result", "error_message", "error_step", "status_detail", "artifacts", "worker_id")
    assert _same({c: getattr(fast[0], c) for c in columns}, one.id) == _same(
        {c: getattr(slow[0], c) for c in columns}, other.id
    )
    assert fast[0].status == report["status"]
    assert fast[0].completed_at is not None and fast[0].completed_at == fast[0].updated_at
    assert fast[0].execution_time_seconds is not None and fast[0].execution_time_seconds >= 0
    if "execution_time_seconds" in report:
        assert fast[0].execution_time_seconds == slow[0].execution_time_seconds == 1.25
    for attempts in (fast[1], slow[1]):
        assert [(a.attempt, a.status, a.error) for a in attempts] == [
            (1, report["status"], report.get("error_message"))
        ]
        assert attempts[0].finished_at is not None

    def event(rows: list[Any], task: Task) -> dict[str, Any]:
        subject, msg_id, payload = rows[-1]  # the verdict, the last of the task's rows
        assert msg_id.endswith(report["status"]) and subject.endswith(report["status"])
        envelope = json.loads(bytes(payload))
        assert envelope["org_id"] == who.org_id and envelope["webhook_url"] == task.webhook_url
        assert envelope["data"]["execution_time"] == pytest.approx(task.execution_time_seconds)
        del envelope["occurred_at"], envelope["data"]["execution_time"]
        return _same({"subject": subject, "msg_id": msg_id, "envelope": envelope}, task.id)

    assert event(fast[2], fast[0]) == event(slow[2], slow[0])


async def test_a_result_the_task_no_longer_waits_for_changes_nothing(
    scheduler: SchedulerApp, rpc: RpcClient, authenticator: DictAuthenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    who, task, key, identity = await new_assigned(rpc, authenticator)
    assert (await claim(rpc, task.id, key)).granted
    _, stranger = authenticator.add()
    db, relay, policy = scheduler.db, scheduler.relay, scheduler.runtime.policy
    spy = PathSpy(monkeypatch)

    # another worker's result, and one for an attempt that does not run: not written
    foreign = result_update(task.id, stranger.worker_id, status="completed")
    stale = result_update(task.id, identity.worker_id, attempt=2, status="completed")
    assert not await outcomes.record_updates(db, relay, [foreign], policy)
    assert not await outcomes.record_updates(db, relay, [stale], policy)
    assert (await status_of(rpc, who, task.id)).status == "running"
    assert spy.updates == [foreign, stale]  # the transaction path said why

    done = result_update(task.id, identity.worker_id, status="completed", result={"v": 1})
    assert await outcomes.record_updates(db, relay, [done], policy)
    before = await _rows(scheduler, task.id)
    # the same result again (a redelivery), and a later different verdict: nothing changes, no new event
    late = result_update(task.id, identity.worker_id, status="failed", error_message="late")
    assert not await outcomes.record_updates(db, relay, [done], policy)
    assert not await outcomes.record_updates(db, relay, [late], policy)
    after = await _rows(scheduler, task.id)
    assert (after[0].status, after[0].result, after[0].error_message) == ("completed", {"v": 1}, None)
    assert after[0].updated_at == before[0].updated_at
    assert [a.status for a in after[1]] == ["completed"]
    assert after[2] == before[2]


async def test_what_the_statement_cannot_write_takes_the_transaction_path(
    scheduler: SchedulerApp, rpc: RpcClient, authenticator: DictAuthenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash to retry, a result with log lines, a task with two updates in the batch: in one batch with a
    plain result, each is recorded as the transaction path records it, in order."""
    who = (await new_assigned(rpc, authenticator))[0]
    key, identity = authenticator.add()
    tasks = [await create_assigned(rpc, who, max_attempts=2) for _ in range(4)]
    for task in tasks:
        assert (await claim(rpc, task.id, key)).granted
    plain, crashed, logged, twice = (t.id for t in tasks)
    w = identity.worker_id
    line = {"seq": 0, "level": "info", "message": "hello"}
    batch = [
        result_update(plain, w, status="completed"),
        result_update(crashed, w, status="failed", error_message="browser gone", retryable=True),
        result_update(logged, w, status="completed", logs=[line]),
        TaskUpdateMessage(task_id=twice, attempt=1, worker_id=w, kind="log", logs=[line]),
        result_update(twice, w, status="failed", error_message="no"),
    ]
    spy = PathSpy(monkeypatch)
    assert await outcomes.record_updates(scheduler.db, scheduler.relay, batch, scheduler.runtime.policy)
    assert spy.updates == batch[1:]
    states = [(await status_of(rpc, who, t)).status for t in (plain, logged, twice)]
    assert states == ["completed", "completed", "failed"]
    retried = await status_of(rpc, who, crashed)  # queued again, and perhaps admitted since
    assert (retried.status, retried.attempt) in {("queued", 2), ("assigned", 2)}
