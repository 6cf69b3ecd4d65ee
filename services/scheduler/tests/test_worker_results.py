"""Results that end an attempt, against the running scheduler on real NATS and PostgreSQL:

* a worker that speaks HTTP (`svc.scheduler.report_result`, behind `POST /workers/tasks/{id}/result`) is held
  to the bus's rules: its key names it, only the attempt it claimed, a repeat changes nothing, a finished or
  lost attempt is a 409 and a task it never claimed a 404, with nothing written on any refusal;
* a worker reporting `timed_out` (its task's own timeout ran out) ends the task `timed_out` with
  `task.timed_out`, and it is not retried.
"""

from __future__ import annotations

import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Empty
from browserfleet_contracts.task_admin import CancelTaskRequest, GetTaskAttemptsRequest
from browserfleet_contracts.tasks import (
    ClaimRequest,
    TaskLogLine,
    TaskPublic,
    WorkerResultReply,
    WorkerResultRequest,
)
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_scheduler.app import SchedulerApp
from nats.js import JetStreamContext

from .conftest import (
    DictAuthenticator,
    actor,
    claim,
    eventually,
    new_assigned,
    publish_update,
    result_update,
    status_of,
    subject_count,
)


async def claimed(
    rpc: RpcClient, authenticator: DictAuthenticator, **extra: object
) -> tuple[TaskPublic, str, str]:
    """A task claimed by a fresh worker: (task, its key, its id)."""
    _, task, key, identity = await new_assigned(rpc, authenticator, **extra)
    reply = await claim(rpc, task.id, key, delivery=1)
    assert reply.granted, reply.reason
    return task, key, identity.worker_id


async def report(rpc: RpcClient, task_id: str, key: str, **body: object) -> WorkerResultReply:
    request = WorkerResultRequest.model_validate({"task_id": task_id, "worker_key": key, **body})
    return await rpc.call(endpoints.Scheduler.REPORT_RESULT, request)


async def refused(rpc: RpcClient, task_id: str, key: str, **body: object) -> ServiceError:
    with pytest.raises(ServiceError) as err:
        await report(rpc, task_id, key, **body)
    return err.value


async def test_an_http_result_is_recorded_once_for_the_claimed_attempt(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext
) -> None:
    task, key, worker_id = await claimed(rpc, authenticator)
    who = actor(task.org_id)
    other_key, _ = authenticator.add()  # a worker of the platform that never claimed it
    foreign_key, _ = authenticator.add(org_id="org-elsewhere")  # another org's worker
    for k in (other_key, foreign_key):
        err = await refused(rpc, task.id, k, status="completed")
        assert (err.status, err.field) == (404, "task_id"), err
    assert (await refused(rpc, task.id, "sk_worker_unknown", status="completed")).status == 401
    assert (await refused(rpc, task.id, key, status="completed", attempt=2)).status == 404
    assert (await status_of(rpc, who, task.id)).status == "running", "a refusal wrote nothing"

    lines = [TaskLogLine(message="exported").model_dump()]
    first = await report(
        rpc, task.id, key, status="success", result="Exported 150 leads", execution_time=45.2, logs=lines
    )
    assert (first.status, first.attempt, first.recorded) == ("completed", 1, True)
    done = await status_of(rpc, who, task.id)
    assert (done.status, done.result, done.execution_time_seconds, done.worker_id) == (
        "completed",
        {"result": "Exported 150 leads"},
        45.2,
        worker_id,
    )
    # the same report again (a retried request): 200, nothing changes
    again = await report(rpc, task.id, key, status="completed", result="something else")
    assert (again.status, again.recorded) == ("completed", False)
    assert (await status_of(rpc, who, task.id)).result == {"result": "Exported 150 leads"}
    # a different verdict after the fact is a conflict
    late = await refused(rpc, task.id, key, status="failed", error_message="late")
    assert (late.status, late.code) == (409, "attempt_not_running"), late
    completed = subjects.event(task.org_id, "task.completed")
    assert (
        await eventually(lambda: subject_count(js, subjects.EVENTS_STREAM, completed), "task.completed") == 1
    )
    assert await subject_count(js, subjects.EVENTS_STREAM, subjects.event(task.org_id, "task.failed")) == 0


async def test_a_cancelled_or_lost_attempt_is_409_and_unchanged(
    rpc: RpcClient, authenticator: DictAuthenticator
) -> None:
    task, key, _ = await claimed(rpc, authenticator)
    who = actor(task.org_id)
    await rpc.call(endpoints.Scheduler.CANCEL_TASK, CancelTaskRequest(actor=who, task_id=task.id))
    err = await refused(rpc, task.id, key, status="completed")
    assert (err.status, err.code) == (409, "attempt_not_running") and "cancelled" in err.message
    assert (await status_of(rpc, who, task.id)).status == "cancelled"

    lost, first_key, _ = await claimed(rpc, authenticator, max_attempts=3)
    # another worker pulls the redelivered dispatch: the first one's lease had run out
    second_key, _ = authenticator.add()
    retry = ClaimRequest(task_id=lost.id, attempt=1, worker_key=second_key, delivery=2)
    assert not (await rpc.call(endpoints.Scheduler.CLAIM, retry)).granted
    err = await refused(rpc, lost.id, first_key, status="completed")
    assert (err.status, err.code) == (409, "attempt_not_running") and "attempt 2" in err.message
    after = await status_of(rpc, actor(lost.org_id), lost.id)
    assert after.status in ("queued", "assigned") and (after.attempt, after.result) == (2, None)


async def test_a_timed_out_result_ends_the_task_timed_out_without_a_retry(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext, scheduler: SchedulerApp
) -> None:
    task, key, worker_id = await claimed(rpc, authenticator, max_attempts=3)
    who = actor(task.org_id)
    update = result_update(
        task.id, worker_id, status="timed_out", error_message="timed out after 300 s", error_step=2
    )
    await publish_update(js, update, subjects.update_msg_id(task.id, 1, "result"))

    async def ended() -> TaskPublic | None:
        current = await status_of(rpc, who, task.id)
        return current if current.status != "running" else None

    done = await eventually(ended, "the timed_out result")
    assert (done.status, done.attempt, done.error_message, done.error_step) == (
        "timed_out",
        1,
        "timed out after 300 s",
        2,
    )
    attempts = await rpc.call(
        endpoints.Scheduler.TASK_ATTEMPTS, GetTaskAttemptsRequest(actor=who, task_id=task.id)
    )
    assert [a.status for a in attempts] == ["timed_out"]
    timed_out = subjects.event(task.org_id, "task.timed_out")
    assert (
        await eventually(lambda: subject_count(js, subjects.EVENTS_STREAM, timed_out), "task.timed_out") == 1
    )
    assert await subject_count(js, subjects.EVENTS_STREAM, subjects.event(task.org_id, "task.failed")) == 0
    sub = await js.pull_subscribe(timed_out, stream=subjects.EVENTS_STREAM)
    (msg,) = await sub.fetch(1)
    await sub.unsubscribe()
    # once per task, whoever says it (the reaper uses the same id): a second announcement is a duplicate
    assert msg.headers and msg.headers["Nats-Msg-Id"] == f"{task.id}:timed_out"
    # over HTTP the same verdict again is a repeat, another one a conflict
    assert not (await report(rpc, task.id, key, status="timed_out")).recorded
    assert (await refused(rpc, task.id, key, status="completed")).status == 409


async def test_db_health(rpc: RpcClient) -> None:
    answer = await rpc.call(endpoints.Scheduler.DB_HEALTH, Empty())
    assert answer.ok and answer.detail == "SELECT 1 ok"
