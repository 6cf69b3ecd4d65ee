"""Asking again: replay one delivery, replay every failed delivery of an endpoint since T as a background job
with progress, send a test event, and change an endpoint (URL, events, description, enabled).

The webhook receiver is a local HTTP server on 127.0.0.1 standing in for a customer's system.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import ById
from browserfleet_contracts.webhooks import (
    ReplayFailedCreate,
    ReplayFailedRequest,
    ReplayJobPublic,
    UpdateEndpointRequest,
    WebhookDeliveryPublic,
    WebhookEndpointPublic,
)
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_webhooks import signing
from browserfleet_webhooks.app import WebhooksService
from nats.js import JetStreamContext
from pydantic import BaseModel

from .conftest import TEST_SCHEDULE, Receiver, Running, events_drained
from .helpers import deliveries, detail, event, org_endpoint, path, publish, settled, until

DEAD_SCRIPT = [503] * len(TEST_SCHEDULE)


async def _update(
    rpc: RpcClient, actor: object, endpoint_id: str, **changes: object
) -> WebhookEndpointPublic:
    req = UpdateEndpointRequest.model_validate({"actor": actor, "id": endpoint_id, "endpoint": changes})
    result: WebhookEndpointPublic = await rpc.call(endpoints.Webhooks.UPDATE_ENDPOINT, req)
    return result


async def test_replay_one_dead_delivery(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
    receiver.answer(p, *DEAD_SCRIPT)
    e = event(actor)
    await publish(js, e)
    [dead] = await settled(rpc, actor, ep.id)
    assert dead.status == "dead"

    replayed: WebhookDeliveryPublic = await rpc.call(
        endpoints.Webhooks.REPLAY_DELIVERY, ById(actor=actor, id=dead.id)
    )
    assert replayed.status == "pending"
    [done] = await settled(rpc, actor, ep.id)
    assert (done.id, done.status, done.attempt) == (dead.id, "succeeded", len(DEAD_SCRIPT) + 1)
    requests = receiver.on(p)
    assert {r.headers["webhook-id"] for r in requests} == {e.id}  # the same id: a receiver can deduplicate
    assert requests[-1].body == requests[0].body
    assert [a.status_code for a in (await detail(rpc, actor, dead.id)).attempts][-2:] == [503, 200]


async def test_replay_every_failed_delivery_since_t_as_a_job(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, running: Running
) -> None:
    """WEBHOOK_REPLAY_BATCH is 2 here, so the job takes several steps (and no circuit slows the dying)."""
    async with running.configured(webhook_replay_batch=2, webhook_circuit_failures=1000):
        await _replay_job(rpc, js, receiver)


async def _replay_job(rpc: RpcClient, js: JetStreamContext, receiver: Receiver) -> None:
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.*"])
    delivered = event(actor, "task.started")
    await publish(js, delivered)
    await settled(rpc, actor, ep.id)
    receiver.answer(p, *(DEAD_SCRIPT * 5))  # the next five events die
    since = datetime.now(UTC)
    lost = [event(actor, "task.completed") for _ in range(5)]
    for e in lost:
        await publish(js, e)
    rows = await settled(rpc, actor, ep.id, count=6)
    assert sorted(d.status for d in rows) == ["dead"] * 5 + ["succeeded"]

    job: ReplayJobPublic = await rpc.call(
        endpoints.Webhooks.REPLAY_FAILED,
        ReplayFailedRequest(actor=actor, endpoint_id=ep.id, replay=ReplayFailedCreate(since=since)),
    )
    assert (job.total, job.status) == (5, "running")

    async def finished() -> ReplayJobPublic | None:
        now: ReplayJobPublic = await rpc.call(endpoints.Webhooks.GET_REPLAY_JOB, ById(actor=actor, id=job.id))
        return now if now.status == "completed" else None

    done = await until(finished)
    assert (done.total, done.replayed) == (5, 5)
    assert done.finished_at is not None
    rows = await settled(rpc, actor, ep.id, count=6)
    assert {d.status for d in rows} == {"succeeded"}
    got = Counter(r.headers["webhook-id"] for r in receiver.on(p) if r.headers["webhook-id"] != delivered.id)
    assert set(got) == {e.id for e in lost}
    assert len(receiver.on(p)) == 1 + 5 * len(DEAD_SCRIPT) + 5  # the delivered one was not sent again


async def test_replay_to_a_disabled_endpoint_is_a_conflict(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
    receiver.answer(p, *DEAD_SCRIPT)
    await publish(js, event(actor))
    [dead] = await settled(rpc, actor, ep.id)
    await _update(rpc, actor, ep.id, enabled=False)

    calls: list[tuple[endpoints.Endpoint[Any, Any], BaseModel]] = [
        (endpoints.Webhooks.REPLAY_DELIVERY, ById(actor=actor, id=dead.id)),
        (endpoints.Webhooks.SEND_TEST, ById(actor=actor, id=ep.id)),
        (
            endpoints.Webhooks.REPLAY_FAILED,
            ReplayFailedRequest(
                actor=actor,
                endpoint_id=ep.id,
                replay=ReplayFailedCreate(since=datetime.now(UTC) - timedelta(1)),
            ),
        ),
    ]
    for call, body in calls:
        with pytest.raises(ServiceError) as exc:
            await rpc.call(call, body)
        assert (exc.value.status, exc.value.code) == (409, "endpoint_disabled")
    # nothing was written: the delivery is still dead, no job, no test delivery
    [still] = await deliveries(rpc, actor, ep.id)
    assert (still.id, still.status) == (dead.id, "dead")


async def test_send_test_event(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])  # not subscribed to webhook.*
    queued: WebhookDeliveryPublic = await rpc.call(endpoints.Webhooks.SEND_TEST, ById(actor=actor, id=ep.id))
    assert queued.event_type == "webhook.test"
    [request] = await receiver.wait_for(p, 1)
    assert ep.secret is not None
    signing.verify(ep.secret, request.headers, request.body)
    body = json.loads(request.body)
    assert (body["event"], body["data"]["endpoint_id"]) == ("webhook.test", ep.id)
    assert request.headers["webhook-id"] == queued.event_id
    [delivery] = await settled(rpc, actor, ep.id)
    assert delivery.status == "succeeded"


async def test_update_url_events_description_and_enabled(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, old, ep = await org_endpoint(rpc, receiver, ["task.completed"])
    new = path()

    changed = await _update(
        rpc, actor, ep.id, url=receiver.url(new), events=["task.failed", "task.failed"], description="ops"
    )
    assert (changed.url, changed.events, changed.description) == (receiver.url(new), ["task.failed"], "ops")
    assert changed.updated_at is not None
    completed, failed = event(actor, "task.completed"), event(actor, "task.failed")
    await publish(js, completed)
    await publish(js, failed)
    [request] = await receiver.wait_for(new, 1)
    assert request.headers["webhook-id"] == failed.id
    await events_drained(js)
    assert receiver.on(old) == []

    # disabled: events arriving meanwhile are not taken; enabled again, it receives new ones
    off = await _update(rpc, actor, ep.id, enabled=False)
    assert (off.enabled, off.disabled_reason) == (False, "admin")
    await publish(js, event(actor, "task.failed"))
    await events_drained(js)
    assert len(await deliveries(rpc, actor, ep.id)) == 1
    on = await _update(rpc, actor, ep.id, enabled=True, description="")
    assert (on.enabled, on.disabled_reason, on.description) == (True, None, None)
    again = event(actor, "task.failed")
    await publish(js, again)
    await until(lambda: any(r.headers["webhook-id"] == again.id for r in receiver.on(new)))
