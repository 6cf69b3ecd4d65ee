"""Events on the real EVENTS stream become signed, retried webhook deliveries.

The webhook receiver is a local HTTP server on 127.0.0.1 standing in for a customer's system.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.events import EventEnvelope
from browserfleet_contracts.webhooks import (
    CreateEndpointRequest,
    ListDeliveriesRequest,
    WebhookDeliveryPublic,
    WebhookEndpointCreate,
    WebhookEndpointPublic,
)
from browserfleet_core.messaging import RpcClient
from browserfleet_webhooks import repository, signing
from browserfleet_webhooks.app import WebhooksService
from browserfleet_webhooks.dispatcher import Dispatcher
from browserfleet_webhooks.models import WebhookDelivery
from nats.js import JetStreamContext
from sqlalchemy import func
from sqlmodel import col, select

from .conftest import Receiver, events_drained


def _org() -> Actor:
    return Actor(org_id=f"org-{uuid.uuid4().hex[:8]}", user_id="admin-1", role="admin")


async def _endpoint(rpc: RpcClient, actor: Actor, url: str, events: list[str]) -> WebhookEndpointPublic:
    req = CreateEndpointRequest(
        actor=actor, endpoint=WebhookEndpointCreate.model_validate({"url": url, "events": events})
    )
    endpoint: WebhookEndpointPublic = await rpc.call(
        subjects.Webhooks.CREATE_ENDPOINT, req, WebhookEndpointPublic
    )
    assert endpoint.secret is not None
    return endpoint


def _event(actor: Actor, event_type: str = "task.completed", **data: object) -> EventEnvelope:
    task_id = str(uuid.uuid4())
    return EventEnvelope(
        id=f"{task_id}:1:{event_type.split('.')[1]}",
        type=event_type,
        org_id=actor.org_id,
        occurred_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        data={"task_id": task_id, "status": "completed", **data},
    )


async def _publish(js: JetStreamContext, event: EventEnvelope, msg_id: str | None = None) -> None:
    await js.publish(
        subjects.event(event.org_id, event.type),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or event.id},
    )


async def _deliveries(rpc: RpcClient, actor: Actor, endpoint_id: str) -> list[WebhookDeliveryPublic]:
    req = ListDeliveriesRequest(actor=actor, endpoint_id=endpoint_id)
    result: list[WebhookDeliveryPublic] = await rpc.call(
        subjects.Webhooks.LIST_DELIVERIES, req, list[WebhookDeliveryPublic]
    )
    return result


async def _settled(
    rpc: RpcClient, actor: Actor, endpoint_id: str, timeout: float = 15.0
) -> list[WebhookDeliveryPublic]:
    """The endpoint's deliveries once none of them is still pending or awaiting a retry."""

    async def poll() -> list[WebhookDeliveryPublic]:
        while True:
            rows = await _deliveries(rpc, actor, endpoint_id)
            if rows and all(d.status in ("succeeded", "dead") for d in rows):
                return rows
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


async def test_event_produces_one_signed_post(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = _org()
    path = f"/hook/{uuid.uuid4().hex}"
    endpoint = await _endpoint(rpc, actor, receiver.url(path), ["task.completed"])
    event = _event(actor, result={"title": "Example"})
    await _publish(js, event)

    [request] = await receiver.wait_for(path, 1)
    assert endpoint.secret is not None
    signing.verify(endpoint.secret, request.headers, request.body)
    assert request.headers["webhook-id"] == event.id
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body == {
        "type": "task.completed",
        "timestamp": "2025-01-02T03:04:05Z",
        "data": {"task_id": event.data["task_id"], "status": "completed", "result": {"title": "Example"}},
    }

    [delivery] = await _settled(rpc, actor, endpoint.id)
    assert delivery.status == "succeeded"
    assert delivery.event_id == event.id
    assert delivery.event_type == "task.completed"
    assert delivery.attempt == 1
    assert delivery.status_code == 200
    assert delivery.latency_ms is not None
    assert delivery.latency_ms >= 0
    assert delivery.error is None

    async with service.db.transaction() as session:
        [attempt] = await repository.list_attempts(session, delivery.id)
    assert (attempt.attempt, attempt.status_code, attempt.error) == (1, 200, None)
    assert attempt.latency_ms is not None


async def test_same_event_twice_is_delivered_once(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = _org()
    path = f"/hook/{uuid.uuid4().hex}"
    endpoint = await _endpoint(rpc, actor, receiver.url(path), ["task.*"])
    event = _event(actor)
    await _publish(js, event, msg_id=f"{event.id}#a")
    await _publish(js, event, msg_id=f"{event.id}#b")  # another msg id: JetStream keeps both copies

    await receiver.wait_for(path, 1)
    await events_drained(js)
    deliveries = await _settled(rpc, actor, endpoint.id)
    assert len(deliveries) == 1
    assert len(receiver.on(path)) == 1
    async with service.db.transaction() as session:
        count = (
            await session.exec(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(col(WebhookDelivery.event_id) == event.id)
            )
        ).one()
    assert count == 1


async def test_failed_attempt_is_retried_until_success(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = _org()
    path = f"/hook/{uuid.uuid4().hex}"
    receiver.answer(path, 500)
    endpoint = await _endpoint(rpc, actor, receiver.url(path), ["*"])
    event = _event(actor)
    await _publish(js, event)

    first, second = await receiver.wait_for(path, 2)
    assert endpoint.secret is not None
    # same webhook-id on the retry, so the receiver can deduplicate; each attempt signed afresh
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event.id
    assert first.body == second.body
    signing.verify(endpoint.secret, second.headers, second.body)

    [delivery] = await _settled(rpc, actor, endpoint.id)
    assert delivery.status == "succeeded"
    assert delivery.attempt == 2
    assert delivery.status_code == 200
    assert delivery.next_attempt_at is None
    async with service.db.transaction() as session:
        attempts = await repository.list_attempts(session, delivery.id)
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
    assert attempts[0].error == "receiver answered HTTP 500"


async def test_delivery_is_dead_after_max_attempts(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = _org()
    path = f"/hook/{uuid.uuid4().hex}"
    max_attempts = service.settings.webhook_max_attempts
    receiver.answer(path, *([503] * max_attempts))
    endpoint = await _endpoint(rpc, actor, receiver.url(path), ["task.completed"])
    await _publish(js, _event(actor))

    [delivery] = await _settled(rpc, actor, endpoint.id)
    assert delivery.status == "dead"
    assert delivery.attempt == max_attempts
    assert delivery.status_code == 503
    assert len(receiver.on(path)) == max_attempts


async def test_endpoint_filters_select_events(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = _org()
    failed_path, any_task_path, other_org_path = (f"/hook/{uuid.uuid4().hex}" for _ in range(3))
    failed_only = await _endpoint(rpc, actor, receiver.url(failed_path), ["task.failed"])
    any_task = await _endpoint(rpc, actor, receiver.url(any_task_path), ["task.*"])
    other_org = _org()
    await _endpoint(rpc, other_org, receiver.url(other_org_path), ["*"])

    event = _event(actor, "task.completed")
    await _publish(js, event)
    await receiver.wait_for(any_task_path, 1)
    await events_drained(js)

    assert await _deliveries(rpc, actor, failed_only.id) == []
    assert [d.event_id for d in await _deliveries(rpc, actor, any_task.id)] == [event.id]
    assert receiver.on(failed_path) == []
    assert receiver.on(other_org_path) == []  # an org's events never reach another org's endpoints

    # and the failed-only endpoint does get task.failed
    failed = _event(actor, "task.failed")
    await _publish(js, failed)
    [request] = await receiver.wait_for(failed_path, 1)
    assert json.loads(request.body)["type"] == "task.failed"


async def test_malformed_event_is_dropped_and_consumer_moves_on(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = _org()
    path = f"/hook/{uuid.uuid4().hex}"
    await _endpoint(rpc, actor, receiver.url(path), ["*"])
    await js.publish(
        subjects.event(actor.org_id, "task.completed"), b"{not json", headers={"Nats-Msg-Id": "bad-1"}
    )
    event = _event(actor)
    await _publish(js, event)
    [request] = await receiver.wait_for(path, 1)
    assert request.headers["webhook-id"] == event.id
    await events_drained(js)


async def test_competing_dispatchers_never_double_send(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    """Three dispatchers (the service's and two more, as other replicas would run) share the table."""
    extra = [Dispatcher(service.db, service.settings) for _ in range(2)]
    for d in extra:
        d.start()
    try:
        actor = _org()
        path = f"/hook/{uuid.uuid4().hex}"
        endpoint = await _endpoint(rpc, actor, receiver.url(path), ["task.completed"])
        events = [_event(actor) for _ in range(20)]
        for event in events:
            await _publish(js, event)
        for d in extra:
            await d.wake()
        await receiver.wait_for(path, len(events))
        await events_drained(js)
        deliveries = await _settled(rpc, actor, endpoint.id)
    finally:
        for d in extra:
            await d.stop()
    assert len(deliveries) == len(events)
    assert {d.status for d in deliveries} == {"succeeded"}
    assert {d.attempt for d in deliveries} == {1}
    ids = [r.headers["webhook-id"] for r in receiver.on(path)]
    assert sorted(ids) == sorted(e.id for e in events)
