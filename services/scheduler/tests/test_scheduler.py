"""The task protocol against a running scheduler on real NATS JetStream and real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Page
from browserfleet_contracts.events import EventEnvelope
from browserfleet_contracts.tasks import (
    ClaimInfoRequest,
    ClaimReply,
    ClaimRequest,
    CreateTaskRequest,
    ListTasksRequest,
    TaskDispatch,
    TaskPublic,
    TaskUpdateMessage,
)
from browserfleet_core.db import utcnow
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_core.outbox import OutboxRelay
from browserfleet_scheduler import admission, claims, creation, outcomes, repository
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.models import TaskAttempt, outbox
from browserfleet_scheduler.policy import Policy
from nats.js import JetStreamContext
from sqlalchemy import func, select

from .conftest import (
    DictAuthenticator,
    actor,
    claim,
    create,
    create_assigned,
    eventually,
    new_assigned,
    publish_update,
    result_update,
    status_of,
    steps_task,
    subject_count,
    take_dispatch,
    updates_consumed,
)


async def admit_now(session: object, relay: OutboxRelay, task_id: str) -> None:
    """Admit inside the caller's transaction; the running scheduler's pass may hold the advisory lock
    for a moment, so ask until this transaction holds it."""
    for _ in range(600):
        if task_id in await admission.admit(session, relay, Policy(), utcnow()):  # type: ignore[arg-type]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("admission lock never free")


async def unpublished(app: SchedulerApp) -> int:
    async with app.db.transaction() as session:
        return int((await session.exec(select(func.count()).where(outbox.c.published_at.is_(None)))).one()[0])  # type: ignore[call-overload]


async def create_dispatches_once_and_announces(rpc: RpcClient, js: JetStreamContext) -> None:
    who = actor()
    task = await create(rpc, who, title="t", priority="high", worker_tags=["gpu"])
    # admitted in its create when the admission lock was free, else left queued for the pass
    assert task.status in ("queued", "assigned")
    assert (task.attempt, task.org_id, task.worker_tags) == (1, who.org_id, ["gpu"])

    msg = await take_dispatch(js, f"{task.id}:1", priority="high", pool="gpu")
    assert msg.subject == subjects.task_run("gpu", "high"), "a gpu task goes to the pool with that tag"
    dispatch = TaskDispatch.model_validate_json(msg.data)
    assert (dispatch.task_id, dispatch.org_id, dispatch.attempt) == (task.id, who.org_id, 1)
    assert dispatch.spec == task.spec

    created = subjects.event(who.org_id, "task.created")
    await eventually(lambda: subject_count(js, subjects.EVENTS_STREAM, created), "task.created event")
    assert await subject_count(js, subjects.EVENTS_STREAM, created) == 1


async def test_create_dispatches_to_pool_with_attempt_msg_id(rpc: RpcClient, js: JetStreamContext) -> None:
    await create_dispatches_once_and_announces(rpc, js)


async def test_the_create_answer_is_the_stored_task(rpc: RpcClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """create_task answers from the values it inserted, not from a re-read: the two must agree."""

    # a paused admission keeps the stored row exactly as inserted
    async def no_admission(*_: object, **__: object) -> list[str]:
        return []

    monkeypatch.setattr(admission, "admit", no_admission)
    who = actor()
    created = await create(
        rpc, who, title="t", priority="high", worker_tags=["gpu"], metadata={"k": "v"}, timeout_seconds=42
    )
    assert created == await status_of(rpc, who, created.id)


async def test_idempotency_key_returns_first_task_per_org(rpc: RpcClient) -> None:
    who, other = actor(), actor()
    first = await create(rpc, who, key="k-1", title="first")
    again = await create(rpc, who, key="k-1", title="first")
    elsewhere = await create(rpc, other, key="k-1", title="another org's")
    assert again.id == first.id and again.title == "first"
    assert elsewhere.id != first.id
    racing = await asyncio.gather(*(create(rpc, who, key="k-race") for _ in range(5)))
    assert len({t.id for t in racing}) == 1


async def test_a_used_idempotency_key_with_another_body_is_409_naming_it(rpc: RpcClient) -> None:
    who = actor()
    first = await create(rpc, who, key="order-7", title="first")
    for changed in ({"title": "second"}, {"title": "first", "priority": "high"}):
        with pytest.raises(ServiceError) as err:
            await create(rpc, who, key="order-7", **changed)
        assert (err.value.status, err.value.code, err.value.field) == (
            409,
            "idempotency_key_reused",
            "Idempotency-Key",
        ), err.value
        assert "order-7" in err.value.message and first.id in err.value.message
    # nothing was written by the refusals: the org still has the one task
    listed = await rpc.call(endpoints.Scheduler.LIST_TASKS, ListTasksRequest(actor=who))
    assert [t.id for t in listed.items] == [first.id]
    # racing creates with one key and two bodies: one task, and the losers of the other body get the 409
    racing = await asyncio.gather(
        *(create(rpc, who, key="k-mixed", title=f"t{i % 2}") for i in range(6)), return_exceptions=True
    )
    made = {t.id for t in racing if isinstance(t, TaskPublic)}
    refused = [e for e in racing if isinstance(e, ServiceError)]
    assert len(made) == 1 and len(refused) == 3 and all(e.status == 409 for e in refused)


async def test_viewer_cannot_create(rpc: RpcClient) -> None:
    with pytest.raises(ServiceError) as err:
        await create(rpc, actor(role="viewer"))
    assert err.value.status == 403


async def test_invalid_request_names_the_field(rpc: RpcClient) -> None:
    body = {"actor": actor().model_dump(), "task": {"steps": [{"action": "navigate", "url": "ftp://x"}]}}
    with pytest.raises(ServiceError) as err:
        await rpc.call_raw(endpoints.Scheduler.CREATE_TASK, body)
    assert err.value.status == 422 and err.value.field is not None and "url" in err.value.field


async def test_other_orgs_task_and_malformed_id_are_not_found(rpc: RpcClient) -> None:
    who = actor()
    task = await create(rpc, who)
    assert (await status_of(rpc, who, task.id)).id == task.id
    for other, task_id in ((actor(), task.id), (who, "not-a-uuid"), (who, str(uuid.uuid4()))):
        with pytest.raises(ServiceError) as err:
            await status_of(rpc, other, task_id)
        assert err.value.status == 404


async def test_list_is_newest_first_with_cursor_and_status_filter(
    rpc: RpcClient, authenticator: DictAuthenticator
) -> None:
    who = actor()
    made = [await create_assigned(rpc, who, title=str(i)) for i in range(3)]
    await create_assigned(rpc, actor())  # another org's task never shows up

    async def page(**kw: object) -> Page[TaskPublic]:
        req = ListTasksRequest(actor=who, **kw)
        return await rpc.call(endpoints.Scheduler.LIST_TASKS, req)

    first = await page(limit=2)
    assert [t.id for t in first.items] == [made[2].id, made[1].id] and first.next_cursor
    second = await page(limit=2, cursor=first.next_cursor)
    assert [t.id for t in second.items] == [made[0].id] and second.next_cursor is None

    key, _ = authenticator.add()
    assert (await claim(rpc, made[1].id, key)).granted
    running = await page(status="running")
    assert [t.id for t in running.items] == [made[1].id]

    with pytest.raises(ServiceError) as err:
        await page(cursor="garbage!")
    assert err.value.status == 422 and err.value.field == "cursor"


async def test_claim_rules(rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext) -> None:
    who = actor()
    task = await create_assigned(rpc, who)
    w1, id1 = authenticator.add(org_id=who.org_id)
    w2, _ = authenticator.add()
    foreign, _ = authenticator.add(org_id="some-other-org")

    assert not (await claim(rpc, task.id, foreign)).granted
    with pytest.raises(ServiceError) as exc:  # an error, so the worker hands the message back
        await claim(rpc, task.id, "sk_worker_unknown")
    assert exc.value.status == 401
    assert not (await claim(rpc, task.id, w1, attempt=2)).granted

    granted = await claim(rpc, task.id, w1)
    assert granted.granted and granted.worker_id == id1.worker_id
    assert granted.task is not None and granted.task.task_id == task.id
    again = await claim(rpc, task.id, w1)
    assert again.granted, "a worker re-claiming its own attempt is answered the same"
    refused = await claim(rpc, task.id, w2)
    assert not refused.granted and refused.reason and "another worker" in refused.reason

    current = await status_of(rpc, who, task.id)
    assert (current.status, current.worker_id) == ("running", id1.worker_id) and current.started_at

    info = await rpc.call(endpoints.Scheduler.CLAIM_INFO, ClaimInfoRequest(task_id=task.id))
    assert (info.status, info.worker_id, info.org_id, info.attempt) == (
        "running",
        id1.worker_id,
        who.org_id,
        1,
    )

    started = subjects.event(who.org_id, "task.started")
    await eventually(lambda: subject_count(js, subjects.EVENTS_STREAM, started), "task.started event")
    assert await subject_count(js, subjects.EVENTS_STREAM, started) == 1


async def test_concurrent_claims_only_one_wins(rpc: RpcClient, authenticator: DictAuthenticator) -> None:
    task = await create_assigned(rpc, actor())
    keys = [authenticator.add()[0] for _ in range(8)]
    replies = await asyncio.gather(*(claim(rpc, task.id, k) for k in keys))
    assert sum(r.granted for r in replies) == 1


async def test_result_recorded_once_even_when_delivered_twice(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext, scheduler: SchedulerApp
) -> None:
    who, task, key, identity = await new_assigned(rpc, authenticator)
    assert (await claim(rpc, task.id, key)).granted

    update = result_update(
        task.id,
        identity.worker_id,
        status="completed",
        result={"title": "Example"},
        execution_time_seconds=1.5,
    )
    late = update.model_copy(update={"status": "failed", "error_message": "late"})
    # distinct msg ids so JetStream keeps every copy: the consumer itself must see the duplicates
    await publish_update(js, update, f"{task.id}:dup-1")
    await publish_update(js, update, f"{task.id}:dup-2")
    await updates_consumed(js, await publish_update(js, late, f"{task.id}:dup-3"))
    await eventually(lambda: _zero(scheduler), "outbox drained")

    done = await status_of(rpc, who, task.id)
    assert (done.status, done.result, done.execution_time_seconds) == ("completed", {"title": "Example"}, 1.5)
    assert done.completed_at is not None and done.error_message is None

    completed = subjects.event(who.org_id, "task.completed")
    assert await subject_count(js, subjects.EVENTS_STREAM, completed) == 1
    assert await subject_count(js, subjects.EVENTS_STREAM, subjects.event(who.org_id, "task.failed")) == 0
    sub = await js.pull_subscribe(completed, stream=subjects.EVENTS_STREAM)
    (msg,) = await sub.fetch(1)
    envelope = EventEnvelope.model_validate_json(msg.data)
    assert msg.headers and msg.headers["Nats-Msg-Id"] == envelope.id == f"{task.id}:1:completed"
    assert envelope.type == "task.completed" and envelope.data["status"] == "completed"
    assert envelope.data["worker_id"] == identity.worker_id and envelope.data["attempt"] == 1
    await sub.unsubscribe()

    async with scheduler.db.transaction() as session:
        attempt = await repository.get_attempt(session, task.id, 1)
    assert isinstance(attempt, TaskAttempt) and attempt.status == "completed" and attempt.finished_at


async def _zero(app: SchedulerApp) -> bool:
    return await unpublished(app) == 0


async def test_update_from_wrong_worker_or_attempt_changes_nothing(
    rpc: RpcClient, authenticator: DictAuthenticator, js: JetStreamContext
) -> None:
    who, task, key, identity = await new_assigned(rpc, authenticator)
    assert (await claim(rpc, task.id, key)).granted
    subject = subjects.task_update(identity.worker_id, task.id)
    bad = [
        TaskUpdateMessage(task_id=task.id, attempt=1, worker_id="impostor", kind="result", status="failed"),
        TaskUpdateMessage(
            task_id=task.id, attempt=7, worker_id=identity.worker_id, kind="result", status="failed"
        ),
        TaskUpdateMessage(task_id=task.id, attempt=1, worker_id=identity.worker_id, kind="started"),
    ]
    acks = [await js.publish(subject, m.model_dump_json().encode()) for m in bad]
    # garbage on the stream must be dropped, not block the consumer
    garbage = await js.publish(subject, b"{not json")

    await updates_consumed(js, max(garbage.seq, *(a.seq for a in acks)))
    assert (await status_of(rpc, who, task.id)).status == "running"


async def test_failed_update_handling_is_redelivered(
    rpc: RpcClient,
    authenticator: DictAuthenticator,
    js: JetStreamContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    who, task, key, identity = await new_assigned(rpc, authenticator)
    assert (await claim(rpc, task.id, key)).granted

    real = repository.finish_running
    calls = 0

    async def flaky(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls <= 2:  # the result's statement fails twice: it is nak'ed and redelivered
            raise RuntimeError("database went away")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(repository, "finish_running", flaky)
    await publish_update(
        js, result_update(task.id, identity.worker_id, status="failed", error_message="boom")
    )

    async def failed() -> bool:
        return (await status_of(rpc, who, task.id)).status == "failed"

    await eventually(failed, "the redelivered update to be recorded")
    assert calls >= 3
    assert (await status_of(rpc, who, task.id)).error_message == "boom"


async def test_outbox_publishes_rows_a_crash_left_behind(
    scheduler: SchedulerApp, js: JetStreamContext, migrated: str
) -> None:
    """The service commits a task but its relay never runs (the process died after commit); a relay
    started later publishes the dispatch and the event, and a second publication is deduplicated."""
    from browserfleet_core.db import Database

    db = Database(migrated, "scheduler")
    dead_relay = OutboxRelay(db, outbox)  # never started
    who = actor()
    try:
        async with db.transaction() as session:
            task = await creation.create_task(
                session, dead_relay, CreateTaskRequest(actor=who, task=steps_task(priority="low"))
            )
            # admitted in the same transaction (invisible to the running scheduler until commit); the
            # advisory lock may be held by its own pass for a moment, so try again until we hold it
            await admit_now(session, dead_relay, task.id)
        async with db.transaction() as session:
            # sqlmodel's exec runs SQLAlchemy's select() of columns too; its overloads name only its own
            sent = select(outbox.c.msg_id, outbox.c.published_at).where(outbox.c.msg_id.like(f"{task.id}:%"))
            rows = (await session.exec(sent)).all()  # type: ignore[call-overload]
        assert {r.msg_id for r in rows} == {f"{task.id}:1", f"{task.id}:created"}
        assert all(r.published_at is None for r in rows)

        recovered = OutboxRelay(db, outbox, poll_seconds=0.2)
        recovered.start(js)
        try:
            msg = await take_dispatch(js, f"{task.id}:1", priority="low")
            assert TaskDispatch.model_validate_json(msg.data).task_id == task.id
            created = subjects.event(who.org_id, "task.created")
            await eventually(lambda: subject_count(js, subjects.EVENTS_STREAM, created), "task.created event")

            # a crash after publishing but before marking the rows: the next pass publishes again
            async with db.transaction() as session:
                await session.exec(
                    outbox.update().where(outbox.c.msg_id == f"{task.id}:created").values(published_at=None)
                )
            await eventually(lambda: _zero(scheduler), "outbox drained again")
            assert await subject_count(js, subjects.EVENTS_STREAM, created) == 1
            envelope = json.loads(await _last(js, created))
            assert envelope["id"] == f"{task.id}:created" and envelope["data"]["status"] == "queued"
        finally:
            await recovered.stop()
    finally:
        await db.dispose()


async def test_outbox_publishes_on_commit_and_marks_the_rows_later(
    scheduler: SchedulerApp, js: JetStreamContext, migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """publish_on_commit: the message reaches the stream after the commit, with no relay pass; the
    row is marked sent later (here: at stop); a rolled-back transaction publishes nothing."""
    from browserfleet_core.db import Database

    db = Database(migrated, "scheduler")
    relay = OutboxRelay(db, outbox, poll_seconds=3600, publish_on_commit=True)  # passes only when asked
    relay.start(js)
    who = actor()
    try:
        created = subjects.event(who.org_id, "task.created")

        async def rolled_back() -> None:
            async with db.transaction() as session:
                await creation.create_task(session, relay, CreateTaskRequest(actor=who, task=steps_task()))
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await rolled_back()
        async with db.transaction() as session:
            task = await creation.create_task(session, relay, CreateTaskRequest(actor=who, task=steps_task()))
        # published by the commit itself: no relay pass ran (poll_seconds is an hour, nothing woke it). The
        # message is on the connection when the commit returns; JetStream stores it on its own time, and a
        # stream-info request that follows it can be answered first
        await eventually(lambda: subject_count(js, subjects.EVENTS_STREAM, created), "task.created event")
        assert await subject_count(js, subjects.EVENTS_STREAM, created) == 1
        assert json.loads(await _last(js, created))["id"] == f"{task.id}:created"

        async def published_at() -> object:
            async with db.transaction() as session:
                when = select(outbox.c.published_at).where(outbox.c.msg_id == f"{task.id}:created")
                return (await session.exec(when)).one()[0]  # type: ignore[call-overload]  # sqlmodel, as above

        # (the scheduler fixture's own relay may also pass over the row meanwhile; JetStream drops its copy)
        # a pass does not publish what the fast path holds (it may publish other rows still pending: the
        # scheduler fixture's own relay holds its rows until it marks them)
        sent: list[str] = []
        publish = js.publish

        async def recording(subject: str, payload: bytes = b"", **kw: Any) -> Any:
            sent.append(kw["headers"]["Nats-Msg-Id"])
            return await publish(subject, payload, **kw)

        monkeypatch.setattr(js, "publish", recording)
        await relay.publish_pending()
        monkeypatch.undo()
        assert f"{task.id}:created" not in sent, sent
        await relay.stop()  # stopping marks what was published
        assert await published_at() is not None
        assert await subject_count(js, subjects.EVENTS_STREAM, created) == 1
    finally:
        await relay.stop()
        await db.dispose()


async def _last(js: JetStreamContext, subject: str) -> bytes:
    """The data of the last message on `subject` in the events stream."""
    msg = await js.get_last_msg(subjects.EVENTS_STREAM, subject)
    assert msg.data is not None
    return msg.data


async def test_concurrent_claims_in_separate_transactions(
    scheduler: SchedulerApp, authenticator: DictAuthenticator
) -> None:
    """Below the RPC layer: claims racing in their own transactions still leave exactly one winner."""
    async with scheduler.db.transaction() as session:
        task = await creation.create_task(
            session, scheduler.relay, CreateTaskRequest(actor=actor(), task=steps_task())
        )
        await admit_now(session, scheduler.relay, task.id)
    identities = [authenticator.add()[1] for _ in range(6)]

    async def one(identity: object) -> ClaimReply:
        async with scheduler.db.transaction() as session:
            req = ClaimRequest(task_id=task.id, attempt=1, worker_key="unused")
            return await claims.claim(session, scheduler.relay, req, identity)  # type: ignore[arg-type]

    replies = await asyncio.gather(*(one(i) for i in identities))
    assert sum(r.granted for r in replies) == 1


async def test_updates_recorded_in_batches_and_a_poisoned_one_fails_alone(
    rpc: RpcClient,
    authenticator: DictAuthenticator,
    js: JetStreamContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Updates that arrive together share one transaction; when one of them cannot be recorded the rest
    still are (one transaction each), the poisoned one is nak'ed, and a malformed one is terminated."""
    who = actor()
    key, identity = authenticator.add()
    tasks = [await create_assigned(rpc, who) for _ in range(6)]
    for task in tasks:
        assert (await claim(rpc, task.id, key)).granted
    poisoned = tasks[0].id
    real = outcomes.apply_update
    real_finish = repository.finish_running
    batches: list[int] = []
    real_batch = outcomes.record_updates

    async def counting(db: object, relay: object, msgs: list[TaskUpdateMessage], *a: object) -> bool:
        batches.append(len(msgs))
        return await real_batch(db, relay, msgs, *a)  # type: ignore[arg-type]

    # poisoned on either path: the results' one statement and the transaction's
    async def poison(session: object, relay: object, msg: TaskUpdateMessage, *a: object, **k: object) -> bool:
        if msg.task_id == poisoned:
            raise RuntimeError("this row cannot be written")
        return await real(session, relay, msg, *a, **k)  # type: ignore[arg-type]

    async def poison_finish(conn: object, finishes: list[repository.Finish], now: object) -> object:
        if any(f.task_id == poisoned for f in finishes):
            raise RuntimeError("this row cannot be written")
        return await real_finish(conn, finishes, now)  # type: ignore[arg-type]

    monkeypatch.setattr(outcomes, "apply_update", poison)
    monkeypatch.setattr(repository, "finish_running", poison_finish)
    monkeypatch.setattr(outcomes, "record_updates", counting)
    await js.publish(subjects.task_update("some-worker", str(uuid.uuid4())), b"{not json")
    updates = [result_update(task.id, identity.worker_id, status="completed") for task in tasks]
    # all at once, so they are waiting together when the consumer takes its next batch
    await asyncio.gather(*(publish_update(js, u) for u in updates))

    async def all_but_poisoned_completed() -> bool:
        states = [(await status_of(rpc, who, t.id)).status for t in tasks[1:]]
        return all(s == "completed" for s in states)

    await eventually(all_but_poisoned_completed, "the healthy updates to be recorded")
    assert (await status_of(rpc, who, poisoned)).status == "running"
    assert max(batches) > 1, f"updates published together were never recorded together: {batches}"
