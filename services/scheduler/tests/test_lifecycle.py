"""Lease loss, cancellation, timeouts, logs and schedules against the running scheduler (real NATS, PG)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.events import EventEnvelope, EventType, TaskLogEventData
from browserfleet_contracts.schedules import CreateScheduleRequest, ScheduleCreate
from browserfleet_contracts.task_admin import (
    CancelTaskRequest,
    GetTaskAttemptsRequest,
    ListTaskLogsRequest,
    TaskLogPage,
)
from browserfleet_contracts.tasks import TaskLogLine, TaskUpdateMessage
from browserfleet_core.db import Database, utcnow
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_core.migrations import upgrade
from browserfleet_core.outbox import OutboxRelay
from browserfleet_scheduler import schedules
from browserfleet_scheduler.app import PACKAGE, SchedulerApp
from browserfleet_scheduler.models import Schedule, Task, outbox
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlmodel import col, select

from .conftest import (
    WAIT_CAP,
    DictAuthenticator,
    actor,
    claim,
    create_assigned,
    eventually,
    new_assigned,
    publish_update,
    result_update,
    status_of,
    steps_task,
    wait_status,
)


async def test_redelivered_claim_loses_the_attempt_and_retries_until_max_then_fails(
    rpc: RpcClient, authenticator: DictAuthenticator
) -> None:
    who = actor()
    task = await create_assigned(rpc, who, max_attempts=2)
    a, _ = authenticator.add()
    b, id_b = authenticator.add()
    assert (await claim(rpc, task.id, a, 1, delivery=1)).granted
    # a plain duplicate (same delivery count) does not take the attempt away
    assert not (await claim(rpc, task.id, b, 1, delivery=1)).granted
    assert (await status_of(rpc, who, task.id)).status == "running"
    # a redelivery proves worker a's lease ran out: attempt 1 lost, attempt 2 dispatched after backoff
    lost = await claim(rpc, task.id, b, 1, delivery=2)
    assert not lost.granted and lost.reason and "lost" in lost.reason
    again = await wait_status(rpc, who, task.id, "assigned")
    assert again.attempt == 2 and again.status_detail
    assert (await claim(rpc, task.id, b, 2, delivery=1)).granted
    # the last attempt is lost too: the task fails and says why
    assert not (await claim(rpc, task.id, a, 2, delivery=2)).granted
    failed = await status_of(rpc, who, task.id)
    assert failed.status == "failed" and failed.error_message and "max_attempts=2" in failed.error_message
    attempts = await rpc.call(
        endpoints.Scheduler.TASK_ATTEMPTS, GetTaskAttemptsRequest(actor=who, task_id=task.id)
    )
    assert [(x.attempt, x.status) for x in attempts] == [(1, "lost"), (2, "lost")]
    assert attempts[1].worker_id == id_b.worker_id


async def test_retryable_failure_runs_a_new_attempt_until_attempts_run_out(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext
) -> None:
    """A failure the worker marks retryable (its browser crashed under the task) is not the task's
    verdict: the attempt ends `failed` and attempt + 1 follows; on the last attempt the task fails."""
    who, task, key, identity = await new_assigned(rpc, authenticator, max_attempts=2)

    async def crash(attempt: int) -> None:
        update = result_update(
            task.id,
            identity.worker_id,
            attempt,
            status="failed",
            error_message="browser disconnected",
            retryable=True,
        )
        await publish_update(js, update, f"{task.id}:{attempt}:result")

    assert (await claim(rpc, task.id, key, 1, delivery=1)).granted
    await crash(1)
    again = await wait_status(rpc, who, task.id, "assigned")
    assert again.attempt == 2
    assert (await claim(rpc, task.id, key, 2, delivery=1)).granted
    await crash(2)
    failed = await wait_status(rpc, who, task.id, "failed")
    assert failed.error_message == "browser disconnected"
    attempts = await rpc.call(
        endpoints.Scheduler.TASK_ATTEMPTS, GetTaskAttemptsRequest(actor=who, task_id=task.id)
    )
    assert [(x.attempt, x.status) for x in attempts] == [(1, "failed"), (2, "failed")]
    assert attempts[0].error and "browser disconnected" in attempts[0].error
    failed_events = subjects.event(who.org_id, "task.failed")
    info = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter=failed_events)
    assert info.state.subjects == {failed_events: 1}, "one task.failed, for the last attempt only"


async def test_cancel_queued_running_and_finished(
    rpc: RpcClient, authenticator: DictAuthenticator, nc: NatsClient
) -> None:
    who = actor(role="admin")
    queued = await create_assigned(rpc, who)
    cancelled = await rpc.call(
        endpoints.Scheduler.CANCEL_TASK, CancelTaskRequest(actor=who, task_id=queued.id)
    )
    assert cancelled.status == "cancelled"
    key, _ = authenticator.add()
    assert not (await claim(rpc, queued.id, key, 1, 1)).granted, "a cancelled task cannot be claimed"

    running = await create_assigned(rpc, who)
    assert (await claim(rpc, running.id, key, 1, 1)).granted
    signal = await nc.subscribe(subjects.task_cancel(running.id))
    done = await rpc.call(endpoints.Scheduler.CANCEL_TASK, CancelTaskRequest(actor=who, task_id=running.id))
    assert done.status == "cancelled"
    await signal.next_msg(timeout=10)  # the worker running it is told (tasks.cancel.<id>)
    await signal.unsubscribe()
    with pytest.raises(ServiceError) as err:
        await rpc.call(endpoints.Scheduler.CANCEL_TASK, CancelTaskRequest(actor=who, task_id=running.id))
    assert err.value.status == 409


async def test_run_timeout_and_queue_timeout(
    rpc: RpcClient, authenticator: DictAuthenticator, scheduler: SchedulerApp, nc: NatsClient
) -> None:
    who, task, key, _ = await new_assigned(rpc, authenticator, timeout_seconds=5)
    assert (await claim(rpc, task.id, key, 1, 1)).granted
    signal = await nc.subscribe(subjects.task_cancel(task.id))
    # an injected clock, far past timeout + grace: no test waits for real time
    await scheduler.lifecycle_pass(utcnow() + timedelta(seconds=60))
    timed = await status_of(rpc, who, task.id)
    assert timed.status == "timed_out" and timed.error_message and "timeout" in timed.error_message
    await signal.next_msg(timeout=10)
    await signal.unsubscribe()

    stuck = await create_assigned(rpc, who, worker_tags=["gpu"])
    await scheduler.lifecycle_pass(utcnow() + timedelta(hours=2))
    assert (await status_of(rpc, who, stuck.id)).status == "timed_out"


async def test_tasks_without_a_pool_stay_queued_and_say_so(rpc: RpcClient) -> None:
    from .conftest import create

    who = actor()
    task = await create(rpc, who, worker_tags=["arm64"])

    async def detail() -> str | None:
        current = await status_of(rpc, who, task.id)
        return (
            current.status_detail
            if current.status == "queued" and "pool" in (current.status_detail or "")
            else None
        )

    assert "arm64" in await eventually(detail, "status detail naming the missing tags")


async def test_logs_are_stored_once_and_followable(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext
) -> None:
    who, task, key, identity = await new_assigned(rpc, authenticator)
    assert (await claim(rpc, task.id, key, 1, 1)).granted
    lines = [TaskLogLine(message=f"line {i}", seq=i, metadata={"i": i}) for i in range(3)]
    msg = TaskUpdateMessage(task_id=task.id, attempt=1, worker_id=identity.worker_id, kind="log", logs=lines)
    for n in range(2):  # the same lines twice: stored once
        await publish_update(js, msg, f"{task.id}:log:{n}")

    async def page(since: int = 0) -> TaskLogPage:
        req = ListTaskLogsRequest(actor=who, task_id=task.id, since=since, limit=2)
        return await rpc.call(endpoints.Scheduler.TASK_LOGS, req)

    first = await eventually(lambda: _with_items(page()), "log lines")
    assert [x.message for x in first.items] == ["line 0", "line 1"] and not first.finished
    rest = await page(first.next_since)
    assert [x.message for x in rest.items] == ["line 2"] and rest.items[0].metadata == {"i": 2}
    assert (await page(rest.next_since)).items == []

    # what was stored is announced once on EVENTS as `task.log` (for the WebSocket stream); the copy stored
    # nothing and announced nothing. A later line gets an event of its own, after the first.
    more = msg.model_copy(update={"logs": [TaskLogLine(message="line 3", seq=3, level="warning")]})
    await publish_update(js, more)
    announced = await _log_events(js, who.org_id, task.id, until=f"{task.id}:1:log:3")
    assert [e.id for e in announced] == [f"{task.id}:1:log:0", f"{task.id}:1:log:3"]
    first_data = TaskLogEventData.model_validate(announced[0].data)
    assert [(x.seq, x.message) for x in first_data.lines] == [(0, "line 0"), (1, "line 1"), (2, "line 2")]
    last = TaskLogEventData.model_validate(announced[1].data)
    assert (last.task_id, last.attempt, [(x.seq, x.level) for x in last.lines]) == (
        task.id,
        1,
        [(3, "warning")],
    )


async def _log_events(js: JetStreamContext, org_id: str, task_id: str, until: str) -> list[EventEnvelope]:
    """The `task.log` events of `task_id` on EVENTS, in stream order, up to the one with id `until`. Updates
    are applied in order, so an event the copy had announced would come before it."""
    sub = await js.subscribe(subjects.event(org_id, EventType.TASK_LOG), ordered_consumer=True)
    found: list[EventEnvelope] = []
    try:
        while not found or found[-1].id != until:
            event = EventEnvelope.model_validate_json((await sub.next_msg(timeout=WAIT_CAP)).data)
            if event.data.get("task_id") == task_id:
                found.append(event)
    finally:
        await sub.unsubscribe()
    return found


async def _with_items(p: object) -> TaskLogPage | None:
    got: TaskLogPage = await p  # type: ignore[misc]
    return got if got.items else None


@pytest.fixture
def replicas_db(migrated: str) -> Iterator[str]:
    """A database of its own (same server) for two scheduler replicas: no running scheduler and no other
    test's schedules can fire there, so the test sees only its own ticks."""
    name = f"sched_replicas_{uuid.uuid4().hex[:8]}"
    base, _, _ = migrated.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade(PACKAGE, f"{base}/{name}")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_schedule_fires_once_per_tick_with_two_replicas(replicas_db: str) -> None:
    """Two replicas (each its own connection pool) fire the same tick at the same moment, then again one after
    the other: one task. The clock is injected throughout; the wall clock plays no part (an earlier version
    raced the live scheduler's loop whenever a real minute boundary passed mid-test)."""
    one, two = Database(replicas_db, "scheduler"), Database(replicas_db, "scheduler")
    relays = OutboxRelay(one, outbox), OutboxRelay(two, outbox)  # never started: the rows are what we count
    who = actor(role="admin")
    created_at = datetime(2030, 3, 30, 23, 59, 30, tzinfo=UTC)
    body = ScheduleCreate(name="every minute", cron="* * * * *", timezone="Europe/Paris", task=steps_task())
    try:
        async with one.transaction() as s:
            made = await schedules.create_schedule(
                s, CreateScheduleRequest(actor=who, schedule=body), now=created_at
            )
        assert made.next_run_at == datetime(2030, 3, 31, 0, 0, tzinfo=UTC)
        at = made.next_run_at + timedelta(seconds=1)

        async def fire(db: Database, relay: OutboxRelay) -> list[str]:
            async with db.transaction() as s:
                return await schedules.fire_due(s, relay, at)

        together = await asyncio.gather(fire(one, relays[0]), fire(two, relays[1]))
        after = [await fire(two, relays[1]), await fire(one, relays[0])]
        fired = [t for batch in (*together, *after) for t in batch]
        assert len(fired) == 1, (together, after)
        async with one.transaction() as s:
            tasks = (await s.exec(select(Task).where(col(Task.schedule_id) == made.id))).all()
            row = await s.get(Schedule, made.id)
        assert [t.id for t in tasks] == fired and tasks[0].schedule_tick == made.next_run_at
        assert row is not None and row.last_run_at == made.next_run_at
        assert row.next_run_at == made.next_run_at + timedelta(minutes=1)
    finally:
        await one.dispose()
        await two.dispose()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "not cron"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
    ],
)
async def test_bad_schedule_is_422_naming_the_field(
    rpc: RpcClient, patch: dict[str, str], field: str
) -> None:
    who = actor(role="admin")
    schedule = {
        "name": "n",
        "cron": "* * * * *",
        "timezone": "UTC",
        "task": steps_task().model_dump(exclude_none=True),
        **patch,
    }
    with pytest.raises(ServiceError) as err:
        await rpc.call_raw(
            endpoints.Scheduler.CREATE_SCHEDULE, {"actor": who.model_dump(), "schedule": schedule}
        )
    assert err.value.status == 422 and err.value.field and field in err.value.field
    from browserfleet_contracts.schedules import ListSchedulesRequest

    listed = await rpc.call(endpoints.Scheduler.LIST_SCHEDULES, ListSchedulesRequest(actor=who))
    assert listed == [], "nothing stored"
