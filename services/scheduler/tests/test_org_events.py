"""Organization deletion: the running scheduler consumes `organization.deleted` from EVENTS (real NATS, real
PostgreSQL) and removes that org's tasks (attempts, logs) and schedules, once, leaving other orgs alone."""

from __future__ import annotations

import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.schedules import (
    CreateScheduleRequest,
    ListSchedulesRequest,
    ScheduleCreate,
    SchedulePublic,
)
from browserfleet_contracts.tasks import ClaimRequest, TaskLogLine, TaskUpdateMessage
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_core.org_events import durable_name
from browserfleet_devkit.testing import publish_org_deleted_twice, wait_consumed
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.models import SchedulerBase, Task, TaskAttempt, TaskLog
from browserfleet_scheduler.org_events import NOT_ORG_SCOPED, purge_org
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlmodel import col, func, select

from .conftest import DictAuthenticator, actor, create, create_assigned, eventually, status_of, steps_task


def test_every_table_is_org_scoped_or_named() -> None:
    """A new table must either carry org_id (then deletion covers it) or be named here on purpose."""
    unscoped = {t.name for t in SchedulerBase.metadata.sorted_tables if "org_id" not in t.c}
    assert unscoped == NOT_ORG_SCOPED


async def _schedule(rpc: RpcClient, org_id: str) -> SchedulePublic:
    who = actor(org_id, role="admin")
    body = ScheduleCreate(name="nightly", cron="0 3 * * *", timezone="UTC", task=steps_task())
    return await rpc.call(
        endpoints.Scheduler.CREATE_SCHEDULE, CreateScheduleRequest(actor=who, schedule=body)
    )


async def _rows(app: SchedulerApp, org_id: str) -> dict[str, int]:
    async with app.db.transaction() as s:
        ids = select(col(Task.id)).where(col(Task.org_id) == org_id)
        return {
            "tasks": (await s.exec(select(func.count()).where(col(Task.org_id) == org_id))).one(),
            "attempts": (await s.exec(select(func.count()).where(col(TaskAttempt.task_id).in_(ids)))).one(),
            "logs": (await s.exec(select(func.count()).where(col(TaskLog.task_id).in_(ids)))).one(),
        }


async def test_organization_deleted_removes_tasks_and_schedules_once(
    rpc: RpcClient,
    scheduler: SchedulerApp,
    authenticator: DictAuthenticator,
    nc: NatsClient,
    js: JetStreamContext,
) -> None:
    gone, kept = actor(role="admin"), actor(role="admin")
    queued = await create(rpc, gone)
    running = await create_assigned(rpc, gone)
    key, identity = authenticator.add()
    claim = ClaimRequest(task_id=running.id, attempt=1, worker_key=key, delivery=1)
    assert (await rpc.call(endpoints.Scheduler.CLAIM, claim)).granted
    log = TaskUpdateMessage(
        task_id=running.id,
        attempt=1,
        worker_id=identity.worker_id,
        kind="log",
        logs=[TaskLogLine(seq=1, message="working")],
    )
    await js.publish(subjects.task_update(log.worker_id, running.id), log.model_dump_json().encode())
    await eventually(lambda: _logs_stored(scheduler, running.id), "the log line to be stored")
    await _schedule(rpc, gone.org_id)
    other_task = await create(rpc, kept)
    other_schedule = await _schedule(rpc, kept.org_id)
    before = await _rows(scheduler, gone.org_id)
    assert before == {"tasks": 2, "attempts": 1, "logs": 1}

    stop = await nc.subscribe(subjects.task_cancel(running.id))
    seq = await publish_org_deleted_twice(js, gone.org_id)
    await wait_consumed(js, subjects.EVENTS_STREAM, durable_name("scheduler"), seq)

    assert await _rows(scheduler, gone.org_id) == {"tasks": 0, "attempts": 0, "logs": 0}
    for task_id in (queued.id, running.id):
        with pytest.raises(ServiceError) as err:
            await status_of(rpc, gone, task_id)
        assert err.value.status == 404
    listed = await rpc.call(endpoints.Scheduler.LIST_SCHEDULES, ListSchedulesRequest(actor=gone))
    assert listed == []
    await stop.next_msg(timeout=10)  # the worker running the org's task is told to stop
    await stop.unsubscribe()
    # a late claim of the deleted task's dispatch is refused
    assert not (await rpc.call(endpoints.Scheduler.CLAIM, claim)).granted
    # the other organization is untouched
    assert (await status_of(rpc, kept, other_task.id)).id == other_task.id
    theirs = await rpc.call(endpoints.Scheduler.LIST_SCHEDULES, ListSchedulesRequest(actor=kept))
    assert [s.id for s in theirs] == [other_schedule.id]
    # and a third delivery would remove nothing
    async with scheduler.db.transaction() as s:
        removed, active = await purge_org(s, gone.org_id)
    assert set(removed.values()) == {0} and active == []


async def _logs_stored(app: SchedulerApp, task_id: str) -> bool:
    async with app.db.transaction() as s:
        n = (await s.exec(select(func.count()).where(col(TaskLog.task_id) == task_id))).one()
    return n > 0
