"""A task's own `webhook_url` (the seed's inbound example): the task's events go there too, signed with the
organization's secret (shown to admins), through the same durable delivery, and SSRF-guarded like any
endpoint. The scheduler puts the URL on the envelope of the task's events (services/scheduler tests that
half); here the events are published as it does.

The webhook receiver is a local HTTP server on 127.0.0.1 standing in for a customer's system.
"""

from __future__ import annotations

import json

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import OrgScoped
from browserfleet_contracts.webhooks import WebhookEndpointPublic, WebhookSecretPublic
from browserfleet_core.messaging import RpcClient
from browserfleet_webhooks.app import WebhooksService
from nats.js import JetStreamContext
from standardwebhooks.webhooks import Webhook

from .conftest import Receiver, Running, events_drained
from .helpers import deliveries, detail, event, org, org_endpoint, path, publish, settled, until


async def _implicit(rpc: RpcClient, actor: object) -> list[WebhookEndpointPublic]:
    listed: list[WebhookEndpointPublic] = await rpc.call(
        endpoints.Webhooks.LIST_ENDPOINTS, OrgScoped(actor=actor)
    )
    return [e for e in listed if e.kind == "task_url"]


async def test_a_tasks_events_go_to_its_webhook_url_signed_with_the_org_secret(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, subscribed, ep = await org_endpoint(rpc, receiver, ["task.*"])
    task_hook = path()
    created = event(actor, "task.created", webhook_url=receiver.url(task_hook))
    completed = event(actor, "task.completed", webhook_url=receiver.url(task_hook), result={"n": 1})
    completed.data["task_id"] = created.data["task_id"]
    for e in (created, completed):
        await publish(js, e)

    first, second = await receiver.wait_for(task_hook, 2)
    org_secret: WebhookSecretPublic = await rpc.call(
        endpoints.Webhooks.GET_ORG_SECRET, OrgScoped(actor=actor)
    )
    verifier = Webhook(org_secret.secret)
    bodies = [verifier.verify(r.body, r.headers) for r in (first, second)]
    assert sorted(b["event"] for b in bodies) == ["task.completed", "task.created"]
    done = next(b for b in bodies if b["event"] == "task.completed")
    assert done["data"]["result"] == {"n": 1}
    assert "webhook_url" not in json.dumps(bodies)  # the URL rides on the envelope, never in the payload
    # the subscribed endpoint gets the same events, signed with its own secret
    await receiver.wait_for(subscribed, 2)
    assert ep.secret is not None
    for r in receiver.on(subscribed):
        Webhook(ep.secret).verify(r.body, r.headers)

    # one implicit endpoint per URL of the org, however many tasks name it; durable deliveries like any
    [implicit] = await _implicit(rpc, actor)
    assert (implicit.url, implicit.events, implicit.enabled) == (receiver.url(task_hook), [], True)
    rows = await settled(rpc, actor, implicit.id, count=2)
    assert {d.status for d in rows} == {"succeeded"}


async def test_only_task_events_go_to_the_task_url(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = org()
    task_hook = path()
    blocked = event(actor, "security.request_blocked", webhook_url=receiver.url(task_hook))
    logged = event(actor, "task.log", webhook_url=receiver.url(task_hook))
    await publish(js, blocked)
    await publish(js, logged)
    await events_drained(js)
    assert await _implicit(rpc, actor) == []
    assert receiver.on(task_hook) == []


async def test_a_failing_task_url_is_retried_and_its_org_secret_rotates_with_overlap(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor = org()
    task_hook = path()
    before: WebhookSecretPublic = await rpc.call(endpoints.Webhooks.GET_ORG_SECRET, OrgScoped(actor=actor))
    rotated: WebhookSecretPublic = await rpc.call(
        endpoints.Webhooks.ROTATE_ORG_SECRET, OrgScoped(actor=actor)
    )
    receiver.answer(task_hook, 503)
    await publish(js, event(actor, "task.failed", webhook_url=receiver.url(task_hook)))
    _, request = await receiver.wait_for(task_hook, 2)
    Webhook(before.secret).verify(request.body, request.headers)
    Webhook(rotated.secret).verify(request.body, request.headers)
    [implicit] = await _implicit(rpc, actor)
    [delivery] = await settled(rpc, actor, implicit.id)
    assert (delivery.status, delivery.attempt) == ("succeeded", 2)


async def test_a_task_url_is_ssrf_guarded(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, running: Running
) -> None:
    """With private targets refused (production's setting), a task URL on loopback is never called."""
    async with running.configured(webhook_allow_private_targets=False, webhook_retry_schedule=[0.0]):
        actor = org()
        task_hook = path()
        await publish(js, event(actor, "task.completed", webhook_url=receiver.url(task_hook)))
        implicit = await until(lambda: _implicit(rpc, actor))
        [delivery] = await settled(rpc, actor, implicit[0].id)
        assert delivery.status == "dead"
        [attempt] = (await detail(rpc, actor, delivery.id)).attempts
        assert attempt.error is not None and attempt.error.startswith("refused:")
        assert "non-public" in attempt.error
        assert receiver.on(task_hook) == []
        assert len(await deliveries(rpc, actor, implicit[0].id)) == 1
