"""Events on the real EVENTS stream become signed, retried webhook deliveries in the seed's payload shape.

The webhook receiver is a local HTTP server on 127.0.0.1 standing in for a customer's system.
"""

from __future__ import annotations

import json

from browserfleet_contracts import subjects
from browserfleet_core.messaging import RpcClient
from browserfleet_webhooks import repository, signing
from browserfleet_webhooks.app import WebhooksService
from browserfleet_webhooks.dispatcher import Dispatcher
from browserfleet_webhooks.models import WebhookDelivery
from nats.js import JetStreamContext
from sqlalchemy import func
from sqlmodel import col, select

from .conftest import TEST_SCHEDULE, Receiver, events_drained
from .helpers import deliveries, detail, endpoint, event, org, org_endpoint, path, publish, settled


async def test_event_produces_one_signed_post_in_the_seeds_shape(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
    e = event(actor, result={"title": "Example"}, worker_id="w-1", execution_time=45.2)
    await publish(js, e)

    [request] = await receiver.wait_for(p, 1)
    assert ep.secret is not None
    signing.verify(ep.secret, request.headers, request.body)
    assert request.headers["webhook-id"] == e.id
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "event": "task.completed",
        "type": "task.completed",
        "timestamp": "2025-01-02T03:04:05Z",
        "data": {
            "task_id": e.data["task_id"],
            "status": "completed",
            "result": {"title": "Example"},
            "worker_id": "w-1",
            "execution_time": 45.2,
        },
    }

    [delivery] = await settled(rpc, actor, ep.id)
    assert (delivery.status, delivery.event_id, delivery.event_type) == ("succeeded", e.id, "task.completed")
    assert (delivery.attempt, delivery.status_code, delivery.error) == (1, 200, None)
    assert delivery.latency_ms is not None and delivery.latency_ms >= 0

    # the per-attempt log, readable per delivery
    d = await detail(rpc, actor, delivery.id)
    [attempt] = d.attempts
    assert (attempt.attempt, attempt.status_code, attempt.error, attempt.response) == (1, 200, None, "ok")
    assert attempt.latency_ms is not None
    assert d.payload["event"] == "task.completed"


async def test_same_event_twice_is_delivered_once(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.*"])
    e = event(actor)
    await publish(js, e, msg_id=f"{e.id}#a")
    await publish(js, e, msg_id=f"{e.id}#b")  # another msg id: JetStream keeps both copies

    await receiver.wait_for(p, 1)
    await events_drained(js)
    assert len(await settled(rpc, actor, ep.id)) == 1
    assert len(receiver.on(p)) == 1
    async with service.db.transaction() as session:
        count = (
            await session.exec(
                select(func.count()).select_from(WebhookDelivery).where(col(WebhookDelivery.event_id) == e.id)
            )
        ).one()
    assert count == 1


async def test_failed_attempt_is_retried_until_success(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, p, ep = await org_endpoint(rpc, receiver, ["*"])
    receiver.answer(p, 500)
    e = event(actor)
    await publish(js, e)

    first, second = await receiver.wait_for(p, 2)
    assert ep.secret is not None
    # same webhook-id on the retry, so the receiver can deduplicate; each attempt signed afresh
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == e.id
    assert first.body == second.body
    signing.verify(ep.secret, second.headers, second.body)

    [delivery] = await settled(rpc, actor, ep.id)
    assert (delivery.status, delivery.attempt, delivery.status_code) == ("succeeded", 2, 200)
    assert delivery.next_attempt_at is None
    async with service.db.transaction() as session:
        attempts = await repository.list_attempts(session, delivery.id)
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
    assert attempts[0].error == "receiver answered HTTP 500"


async def test_delivery_is_dead_after_every_scheduled_attempt(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
    attempts = len(TEST_SCHEDULE)
    receiver.answer(p, *([503] * attempts))
    await publish(js, event(actor))

    [delivery] = await settled(rpc, actor, ep.id)
    assert (delivery.status, delivery.attempt, delivery.status_code) == ("dead", attempts, 503)
    assert len(receiver.on(p)) == attempts


async def test_endpoint_filters_select_events(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = org()
    failed_path, any_task_path, other_org_path, everything_path = (path() for _ in range(4))
    failed_only = await endpoint(rpc, actor, receiver.url(failed_path), ["task.failed"])
    any_task = await endpoint(rpc, actor, receiver.url(any_task_path), ["task.*"])
    everything = await endpoint(rpc, actor, receiver.url(everything_path), ["*"])
    await endpoint(rpc, org(), receiver.url(other_org_path), ["*"])

    completed = event(actor, "task.completed")
    await publish(js, completed)
    # task.log is the event stream's, never a webhook's, whatever the wildcard
    log_line = event(actor, "task.log")
    await publish(js, log_line)
    await receiver.wait_for(any_task_path, 1)
    await events_drained(js)

    assert await deliveries(rpc, actor, failed_only.id) == []
    assert [d.event_id for d in await deliveries(rpc, actor, any_task.id)] == [completed.id]
    assert [d.event_id for d in await deliveries(rpc, actor, everything.id)] == [completed.id]
    assert receiver.on(failed_path) == []
    assert receiver.on(other_org_path) == []  # an org's events never reach another org's endpoints

    failed = event(actor, "task.failed")
    await publish(js, failed)
    [request] = await receiver.wait_for(failed_path, 1)
    assert json.loads(request.body)["event"] == "task.failed"


async def test_malformed_event_is_dropped_and_consumer_moves_on(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = org()
    p = path()
    await endpoint(rpc, actor, receiver.url(p), ["*"])
    await js.publish(
        subjects.event(actor.org_id, "task.completed"), b"{not json", headers={"Nats-Msg-Id": "bad-1"}
    )
    e = event(actor)
    await publish(js, e)
    [request] = await receiver.wait_for(p, 1)
    assert request.headers["webhook-id"] == e.id
    await events_drained(js)


async def test_competing_dispatchers_never_double_send(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    """Three dispatchers (the service's and two more, as other replicas would run) share the table."""
    rt = service.runtime
    extra = [Dispatcher(service.db, service.settings, rt.box, rt.relay) for _ in range(2)]
    for d in extra:
        d.start()
    try:
        actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
        events = [event(actor) for _ in range(20)]
        for e in events:
            await publish(js, e)
        for d in extra:
            await d.wake()
        await receiver.wait_for(p, len(events))
        await events_drained(js)
        rows = await settled(rpc, actor, ep.id, count=len(events))
    finally:
        for d in extra:
            await d.stop()
    assert len(rows) == len(events)
    assert {d.status for d in rows} == {"succeeded"}
    assert {d.attempt for d in rows} == {1}
    ids = [r.headers["webhook-id"] for r in receiver.on(p)]
    assert sorted(ids) == sorted(e.id for e in events)
