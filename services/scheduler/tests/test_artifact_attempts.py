"""A task keeps the artifacts of every attempt: a crashed attempt's failure screenshot and trace stay on the
task after the retry, and a redelivered update changes nothing (real NATS, real PostgreSQL)."""

from __future__ import annotations

from browserfleet_contracts import subjects
from browserfleet_contracts.tasks import ArtifactRef, TaskUpdateMessage
from browserfleet_core.messaging import RpcClient
from browserfleet_scheduler import outcomes
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.models import Task
from nats.js import JetStreamContext

from .conftest import (
    DictAuthenticator,
    claim,
    eventually,
    new_assigned,
    publish_update,
    result_update,
    status_of,
    subject_count,
    updates_consumed,
    wait_status,
)


def _ref(task_id: str, attempt: int, name: str, size: int = 3) -> ArtifactRef:
    return ArtifactRef(
        name=name,
        object_name=f"{task_id}/{attempt}/{name}",
        content_type="application/octet-stream",
        size=size,
    )


def _result(
    task_id: str, attempt: int, worker_id: str, refs: list[ArtifactRef], *, retryable: bool
) -> TaskUpdateMessage:
    return result_update(
        task_id,
        worker_id,
        attempt,
        status="failed",
        error_message="browser disconnected" if retryable else "step 0: element not found",
        artifacts=refs,
        retryable=retryable,
    )


async def _claim(rpc: RpcClient, task_id: str, key: str, attempt: int) -> None:
    assert (await claim(rpc, task_id, key, attempt, delivery=1)).granted


async def test_every_attempts_artifacts_are_kept_and_a_redelivery_changes_nothing(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext
) -> None:
    who, task, key, identity = await new_assigned(rpc, authenticator, max_attempts=3)
    first = [_ref(task.id, 1, "failure.png"), _ref(task.id, 1, "trace.zip")]
    second = [_ref(task.id, 2, "trace.zip", size=7), _ref(task.id, 2, "failure.png", size=5)]
    crash = _result(task.id, 1, identity.worker_id, first, retryable=True)
    verdict = _result(task.id, 2, identity.worker_id, second, retryable=False)

    await _claim(rpc, task.id, key, 1)
    await publish_update(js, crash, f"{task.id}:1:result")
    retried = await wait_status(rpc, who, task.id, "assigned")
    assert retried.attempt == 2
    assert retried.artifacts == first, "the crashed attempt's artifacts are on the task while it retries"

    await _claim(rpc, task.id, key, 2)
    await publish_update(js, verdict, f"{task.id}:2:result")
    failed = await wait_status(rpc, who, task.id, "failed")
    # by attempt, then in the order the worker reported them
    assert failed.artifacts == [*first, *second]

    # JetStream redelivers what it handed out but saw no ack for: new msg ids, so the stream keeps both
    await publish_update(js, crash, f"{task.id}:1:result:again")
    await updates_consumed(js, await publish_update(js, verdict, f"{task.id}:2:result:again"))
    after = await status_of(rpc, who, task.id)
    assert (after.status, after.attempt, after.artifacts) == ("failed", 2, [*first, *second])
    failed_events = subjects.event(who.org_id, "task.failed")
    # the event follows the commit the status came from: awaited on the stream, then counted
    await eventually(lambda: subject_count(js, subjects.EVENTS_STREAM, failed_events), "task.failed event")
    assert await subject_count(js, subjects.EVENTS_STREAM, failed_events) == 1


async def test_the_last_attempts_crash_keeps_every_attempts_artifacts(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext
) -> None:
    """A retryable failure with no attempts left fails the task; its artifacts are kept like any other's."""
    who, task, key, identity = await new_assigned(rpc, authenticator, max_attempts=2)
    first, second = [_ref(task.id, 1, "failure.png")], [_ref(task.id, 2, "failure.png", size=9)]
    await _claim(rpc, task.id, key, 1)
    await publish_update(
        js, _result(task.id, 1, identity.worker_id, first, retryable=True), f"{task.id}:1:result"
    )
    await wait_status(rpc, who, task.id, "assigned")
    await _claim(rpc, task.id, key, 2)
    await publish_update(
        js, _result(task.id, 2, identity.worker_id, second, retryable=True), f"{task.id}:2:result"
    )
    failed = await wait_status(rpc, who, task.id, "failed")
    assert (failed.attempt, failed.error_message) == (2, "browser disconnected")
    assert failed.artifacts == [*first, *second]


async def test_one_batch_records_an_attempts_artifacts_once_and_only_its_own_objects(
    scheduler: SchedulerApp, rpc: RpcClient, authenticator: DictAuthenticator
) -> None:
    """Below the consumer: the same update twice in one batch (one transaction), with refs naming objects
    outside `<task_id>/<attempt>/`: another task's, and a later attempt's (the gateway would serve or file
    them as such)."""
    who, task, key, identity = await new_assigned(rpc, authenticator, max_attempts=3)
    await _claim(rpc, task.id, key, 1)
    good = [_ref(task.id, 1, "failure.png"), _ref(task.id, 1, "trace.zip")]
    foreign = ArtifactRef(name="x.png", object_name="another-task/1/x.png", content_type="image/png", size=1)
    crash = _result(
        task.id, 1, identity.worker_id, [good[0], foreign, _ref(task.id, 2, "y.png"), good[1]], retryable=True
    )
    async with scheduler.db.transaction() as session:
        assert await outcomes.apply_updates(session, scheduler.relay, [crash, crash])
    after = await status_of(rpc, who, task.id)
    assert (after.status, after.attempt) in {("queued", 2), ("assigned", 2)}
    assert after.artifacts == good


def test_an_update_replaces_only_its_own_attempts_artifacts() -> None:
    """The rule itself, without the state machine in front of it: applying an update twice is applying it
    once, another attempt's refs are untouched, and the list stays in attempt order."""
    task_id = "3f1c8f5e-0000-4000-8000-000000000001"
    task = Task(
        id=task_id, org_id="o", kind="steps", status="running", priority="normal", spec={}, timeout_seconds=60,
        max_attempts=3,
    )  # fmt: skip
    one = _result(task_id, 1, "w", [_ref(task_id, 1, "failure.png")], retryable=True)
    two = _result(
        task_id, 2, "w", [_ref(task_id, 2, "page.pdf"), _ref(task_id, 2, "failure.png")], retryable=False
    )
    task.artifacts = outcomes.with_attempt_artifacts(task, two)
    task.artifacts = outcomes.with_attempt_artifacts(task, one)
    once = [r.model_dump(mode="json") for r in [*one.artifacts, *two.artifacts]]
    assert task.artifacts == once
    task.artifacts = outcomes.with_attempt_artifacts(task, two)
    assert task.artifacts == once
    resent = two.model_copy(update={"artifacts": [_ref(task_id, 2, "page.pdf", size=4)]})
    task.artifacts = outcomes.with_attempt_artifacts(task, resent)
    assert task.artifacts == [once[0], _ref(task_id, 2, "page.pdf", size=4).model_dump(mode="json")]
