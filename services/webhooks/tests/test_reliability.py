"""Nothing is lost, as Svix documents delivery: a receiver that is down for a while gets every event once it is
back (the circuit holds deliveries instead of burning their attempts), a 3xx is a failure never followed, a
Retry-After is honoured, 410 disables the endpoint, so does failing for the whole window (shortened by its
setting), each with a `webhook.endpoint.disabled` event; and a restart mid-backoff loses nothing.

The webhook receiver is a local HTTP server on 127.0.0.1 standing in for a customer's system. The retry
schedule is Svix's compressed to seconds (conftest.TEST_SCHEDULE); no assertion is on time.
"""

from __future__ import annotations

import json
from collections import Counter

from browserfleet_contracts import endpoints
from browserfleet_contracts.webhooks import UpdateEndpointRequest, WebhookEndpointUpdate
from browserfleet_core.messaging import RpcClient
from browserfleet_webhooks.app import WebhooksService
from nats.js import JetStreamContext

from .conftest import Receiver, Running, events_drained
from .helpers import (
    deliveries,
    detail,
    endpoint,
    event,
    get_endpoint,
    org,
    org_endpoint,
    path,
    publish,
    settled,
    until,
)


async def test_receiver_down_for_a_while_then_back_gets_every_event_exactly_once(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    """The issue's failure: 20 tasks completed while the receiver was down; 5 events were never delivered."""
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
    await receiver.down()
    try:
        events = [event(actor, "task.completed") for _ in range(20)]
        for e in events:
            await publish(js, e)
        await events_drained(js)

        # down long enough that attempts failed and the endpoint's circuit opened: deliveries now wait
        async def circuit_open() -> bool:
            rows = await deliveries(rpc, actor, ep.id)
            failed = [d for d in rows if d.attempt >= 1 and d.status == "failed"]
            return (
                len(rows) == 20 and bool(failed) and (await get_endpoint(rpc, actor, ep.id)).circuit == "open"
            )

        await until(circuit_open)
    finally:
        await receiver.up()

    rows = await settled(rpc, actor, ep.id, count=20)
    assert {d.status for d in rows} == {"succeeded"}, [d.error for d in rows if d.status != "succeeded"]
    ids = Counter(r.headers["webhook-id"] for r in receiver.on(p))
    assert ids == Counter(e.id for e in events), "every event arrives, each once"
    healthy = await get_endpoint(rpc, actor, ep.id)
    assert (healthy.circuit, healthy.failing_since, healthy.enabled) == ("closed", None, True)


async def test_a_redirect_is_a_failure_and_never_followed(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = org()
    p, elsewhere = path(), path()
    receiver.answer(p, 302, headers={"location": receiver.url(elsewhere)})
    ep = await endpoint(rpc, actor, receiver.url(p), ["task.completed"])
    await publish(js, event(actor))

    [delivery] = await settled(rpc, actor, ep.id)
    assert (delivery.status, delivery.attempt) == ("succeeded", 2)  # the retry, to the same URL
    d = await detail(rpc, actor, delivery.id)
    assert [(a.status_code, a.error) for a in d.attempts] == [
        (302, "receiver answered HTTP 302 (redirects are not followed)"),
        (200, None),
    ]
    assert receiver.on(elsewhere) == []


async def test_retry_after_is_honoured(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    """The schedule's second wait is 20 ms; the receiver asks for 2 s and gets them (recorded times only)."""
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
    receiver.answer(p, 503, headers={"retry-after": "2"})
    await publish(js, event(actor))

    [delivery] = await settled(rpc, actor, ep.id)
    first, second = (await detail(rpc, actor, delivery.id)).attempts
    assert (first.status_code, second.status_code) == (503, 200)
    assert (second.at - first.at).total_seconds() >= 2.0


async def test_410_disables_the_endpoint_and_says_so(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = org()
    gone, watcher = path(), path()
    receiver.answer(gone, 410)
    ep = await endpoint(rpc, actor, receiver.url(gone), ["task.completed"])
    watching = await endpoint(rpc, actor, receiver.url(watcher), ["webhook.*"])
    first = event(actor)
    await publish(js, first)

    [notice] = await receiver.wait_for(watcher, 1)
    body = json.loads(notice.body)
    assert body["event"] == "webhook.endpoint.disabled"
    assert body["data"]["endpoint_id"] == ep.id
    assert body["data"]["reason"] == "gone"
    assert body["data"]["url"] == receiver.url(gone)
    disabled = await get_endpoint(rpc, actor, ep.id)
    assert (disabled.enabled, disabled.disabled_reason) == (False, "gone")
    assert len(receiver.on(gone)) == 1

    # a disabled endpoint takes no new events; what it had waits (nothing is dropped)...
    later = event(actor)
    await publish(js, later)
    await events_drained(js)
    assert [d.event_id for d in await deliveries(rpc, actor, ep.id)] == [first.id]
    # ...and goes out once an admin enables it again
    update = UpdateEndpointRequest(actor=actor, id=ep.id, endpoint=WebhookEndpointUpdate(enabled=True))
    await rpc.call(endpoints.Webhooks.UPDATE_ENDPOINT, update)
    [delivery] = await settled(rpc, actor, ep.id)
    assert delivery.status == "succeeded"
    assert [r.headers["webhook-id"] for r in receiver.on(gone)] == [first.id, first.id]
    assert (await get_endpoint(rpc, actor, watching.id)).enabled


async def test_an_endpoint_failing_for_the_whole_window_is_disabled(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, running: Running
) -> None:
    """WEBHOOK_DISABLE_AFTER_SECONDS shortened to 0.3 s (five days by default)."""
    async with running.configured(webhook_disable_after_seconds=0.3):
        actor = org()
        failing, watcher = path(), path()
        receiver.answer(failing, *([500] * 100))
        ep = await endpoint(rpc, actor, receiver.url(failing), ["task.completed"])
        await endpoint(rpc, actor, receiver.url(watcher), ["webhook.endpoint.disabled"])
        await publish(js, event(actor))

        [notice] = await receiver.wait_for(watcher, 1)
        data = json.loads(notice.body)["data"]
        assert (data["endpoint_id"], data["reason"], data["kind"]) == (ep.id, "failing", "endpoint")
        assert data["failing_since"] is not None
        disabled = await get_endpoint(rpc, actor, ep.id)
        assert (disabled.enabled, disabled.disabled_reason) == (False, "failing")
        [delivery] = await deliveries(rpc, actor, ep.id)
        assert delivery.status == "failed"  # waiting, not dead: enabling the endpoint sends it
        receiver.script.pop(failing, None)


async def test_a_restart_mid_backoff_loses_nothing(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, running: Running
) -> None:
    """The delivery waits for its retry in its row; the service stops (nothing in memory survives) and a new
    one sends it."""
    async with running.configured(webhook_retry_schedule=[0.0, 2.0, 2.0]):
        actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
        receiver.answer(p, 500)
        e = event(actor)
        await publish(js, e)
        await receiver.wait_for(p, 1)

        async def waiting() -> bool:
            rows = await deliveries(rpc, actor, ep.id)
            return len(rows) == 1 and rows[0].status == "failed" and rows[0].next_attempt_at is not None

        await until(waiting)
        await running.restart(webhook_retry_schedule=[0.0, 2.0, 2.0])
        [delivery] = await settled(rpc, actor, ep.id)
        assert (delivery.status, delivery.attempt) == ("succeeded", 2)
        assert [r.headers["webhook-id"] for r in receiver.on(p)] == [e.id, e.id]


async def test_the_attempt_log_keeps_a_response_excerpt(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
    receiver.answer(p, 500)
    await publish(js, event(actor))
    [delivery] = await settled(rpc, actor, ep.id)
    first, second = (await detail(rpc, actor, delivery.id)).attempts
    assert (first.status_code, first.response, first.error) == (500, "ok", "receiver answered HTTP 500")
    assert first.at <= second.at
