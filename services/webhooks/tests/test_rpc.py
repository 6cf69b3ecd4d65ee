"""The request/reply API over real NATS: roles, org scoping, validation, secrets shown once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Ack, Actor, OrgScoped
from browserfleet_contracts.webhooks import (
    ReplayJobPublic,
    WebhookDeliveryPublic,
    WebhookEndpointPublic,
    WebhookSecretPublic,
)
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from nats.js import JetStreamContext

from .conftest import Receiver
from .helpers import event, path, publish, until


def _actor(role: str = "admin", org: str | None = None) -> dict[str, str]:
    return Actor(org_id=org or f"org-{uuid.uuid4().hex[:8]}", user_id="u1", role=role).model_dump()


async def _create(rpc: RpcClient, actor: dict[str, str], **endpoint: object) -> WebhookEndpointPublic:
    body = {"actor": actor, "endpoint": {"url": "http://127.0.0.1:9/hook", **endpoint}}
    result: WebhookEndpointPublic = await rpc.call_raw(endpoints.Webhooks.CREATE_ENDPOINT, body)
    return result


async def test_create_list_delete(rpc: RpcClient) -> None:
    admin = _actor()
    created = await _create(
        rpc, admin, events=["task.completed", "task.*", "task.completed"], description="ci"
    )
    assert created.secret is not None
    assert created.secret.startswith("whsec_")
    assert created.events == ["task.*", "task.completed"]
    listed: list[WebhookEndpointPublic] = await rpc.call_raw(
        endpoints.Webhooks.LIST_ENDPOINTS, {"actor": admin}
    )
    assert [e.id for e in listed] == [created.id]
    assert listed[0].secret is None  # shown once, at creation
    assert listed[0].description == "ci"

    ack: Ack = await rpc.call_raw(endpoints.Webhooks.DELETE_ENDPOINT, {"actor": admin, "id": created.id})
    assert ack.ok
    assert await rpc.call_raw(endpoints.Webhooks.LIST_ENDPOINTS, {"actor": admin}) == []


async def test_non_admin_cannot_create_or_delete(rpc: RpcClient) -> None:
    admin = _actor()
    created = await _create(rpc, admin)
    viewer = _actor("viewer", org=admin["org_id"])
    with pytest.raises(ServiceError) as exc:
        await _create(rpc, viewer)
    assert exc.value.status == 403
    with pytest.raises(ServiceError) as exc:
        await rpc.call_raw(endpoints.Webhooks.DELETE_ENDPOINT, {"actor": viewer, "id": created.id})
    assert exc.value.status == 403
    # a viewer may still look
    listed = await rpc.call_raw(endpoints.Webhooks.LIST_ENDPOINTS, {"actor": viewer})
    assert len(listed) == 1


async def test_other_orgs_endpoint_is_not_found(rpc: RpcClient) -> None:
    owner = _actor()
    created = await _create(rpc, owner)
    intruder = _actor()
    with pytest.raises(ServiceError) as exc:
        await rpc.call_raw(endpoints.Webhooks.DELETE_ENDPOINT, {"actor": intruder, "id": created.id})
    assert exc.value.status == 404
    with pytest.raises(ServiceError) as exc:
        await rpc.call_raw(endpoints.Webhooks.LIST_DELIVERIES, {"actor": intruder, "endpoint_id": created.id})
    assert exc.value.status == 404
    assert exc.value.field == "endpoint_id"
    assert await rpc.call_raw(endpoints.Webhooks.LIST_ENDPOINTS, {"actor": intruder}) == []
    # still there for its owner
    owned = await rpc.call_raw(endpoints.Webhooks.LIST_ENDPOINTS, {"actor": owner})
    assert len(owned) == 1


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ({"url": "not a url"}, "endpoint.url"),
        ({"url": "ftp://example.com/x"}, "endpoint.url"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["Task Completed"]}, "endpoint.events"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["task.*", "task.exploded"]}, "endpoint.events.1"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["task.log"]}, "endpoint.events.0"),
        ({"url": "http://127.0.0.1:9/hook", "events": []}, "endpoint.events"),
        ({"url": "http://127.0.0.1:9/hook", "secret": "mine"}, "endpoint.secret"),
    ],
)
async def test_invalid_endpoint_names_the_field(
    rpc: RpcClient, endpoint: dict[str, object], field: str
) -> None:
    with pytest.raises(ServiceError) as exc:
        await rpc.call_raw(endpoints.Webhooks.CREATE_ENDPOINT, {"actor": _actor(), "endpoint": endpoint})
    assert exc.value.status == 422
    assert exc.value.field is not None
    assert exc.value.field.startswith(field)


async def test_an_unknown_event_type_is_a_422_naming_it(rpc: RpcClient) -> None:
    with pytest.raises(ServiceError) as exc:
        await _create(rpc, _actor(), events=["task.completed", "worker.exploded"])
    assert (exc.value.status, exc.value.field) == (422, "endpoint.events.1")
    assert "'worker.exploded' is not a known event type" in exc.value.message
    # every catalogued type and wildcard is accepted
    created = await _create(
        rpc, _actor(), events=["worker.*", "webhook.endpoint.disabled", "credential.*", "*"]
    )
    assert created.events == ["*", "credential.*", "webhook.endpoint.disabled", "worker.*"]


async def _endpoint_delivery_and_job(
    rpc: RpcClient, actor: dict[str, str]
) -> tuple[WebhookEndpointPublic, WebhookDeliveryPublic, ReplayJobPublic]:
    """An endpoint of `actor`'s org with a delivery (a test event) and a replay job."""
    created = await _create(rpc, actor)
    sent: WebhookDeliveryPublic = await rpc.call_raw(
        endpoints.Webhooks.SEND_TEST, {"actor": actor, "id": created.id}
    )
    job: ReplayJobPublic = await rpc.call_raw(
        endpoints.Webhooks.REPLAY_FAILED,
        {"actor": actor, "endpoint_id": created.id, "replay": {"since": "2020-01-01T00:00:00Z"}},
    )
    return created, sent, job


def _delivery_ops(endpoint_id: str, delivery_id: str, job_id: str) -> list[tuple[Any, dict[str, Any]]]:
    """Every operation that names an endpoint, a delivery or a replay job, with its body."""
    w = endpoints.Webhooks
    return [
        (w.GET_ENDPOINT, {"id": endpoint_id}),
        (w.UPDATE_ENDPOINT, {"id": endpoint_id, "endpoint": {"description": "mine now"}}),
        (w.DELETE_ENDPOINT, {"id": endpoint_id}),
        (w.GET_SECRET, {"id": endpoint_id}),
        (w.ROTATE_SECRET, {"id": endpoint_id}),
        (w.SEND_TEST, {"id": endpoint_id}),
        (w.REPLAY_FAILED, {"endpoint_id": endpoint_id, "replay": {"since": "2020-01-01T00:00:00Z"}}),
        (w.LIST_DELIVERIES, {"endpoint_id": endpoint_id}),
        (w.GET_DELIVERY, {"id": delivery_id}),
        (w.REPLAY_DELIVERY, {"id": delivery_id}),
        (w.GET_REPLAY_JOB, {"id": job_id}),
    ]


async def test_another_orgs_endpoint_delivery_and_job_are_not_found(rpc: RpcClient) -> None:
    owner = _actor()
    created, sent, job = await _endpoint_delivery_and_job(rpc, owner)
    intruder = _actor()
    for op, body in _delivery_ops(created.id, sent.id, job.id):
        with pytest.raises(ServiceError) as exc:
            await rpc.call_raw(op, {"actor": intruder, **body})
        assert exc.value.status == 404, op.subject
    # the owner's objects are untouched
    mine: WebhookEndpointPublic = await rpc.call_raw(
        endpoints.Webhooks.GET_ENDPOINT, {"actor": owner, "id": created.id}
    )
    assert mine.description is None
    secret: WebhookSecretPublic = await rpc.call_raw(
        endpoints.Webhooks.GET_SECRET, {"actor": owner, "id": created.id}
    )
    assert secret.secret == created.secret


async def test_only_admins_change_anything_or_see_secrets(rpc: RpcClient) -> None:
    admin = _actor()
    created, sent, job = await _endpoint_delivery_and_job(rpc, admin)
    reads = {"svc.webhooks.get_endpoint", "svc.webhooks.list_deliveries", "svc.webhooks.get_delivery",
             "svc.webhooks.get_replay_job"}  # fmt: skip
    for role in ("user", "viewer"):
        member = _actor(role, org=admin["org_id"])
        for op, body in _delivery_ops(created.id, sent.id, job.id):
            if op.subject in reads:
                await rpc.call_raw(op, {"actor": member, **body})
                continue
            with pytest.raises(ServiceError) as exc:
                await rpc.call_raw(op, {"actor": member, **body})
            assert exc.value.status == 403, (role, op.subject)
        for op in (endpoints.Webhooks.GET_ORG_SECRET, endpoints.Webhooks.ROTATE_ORG_SECRET):
            with pytest.raises(ServiceError) as exc:
                await rpc.call_raw(op, {"actor": member})
            assert exc.value.status == 403


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"description": "new", "events": ["task.exploded"]}, "endpoint.events.0"),
        ({"description": "new", "url": "ftp://example.com/x"}, "endpoint.url"),
        ({"description": "new", "enabled": "perhaps"}, "endpoint.enabled"),
        ({}, "endpoint"),
        ({"description": "new", "secret": "mine"}, "endpoint.secret"),
    ],
)
async def test_a_bad_update_names_the_field_and_changes_nothing(
    rpc: RpcClient, change: dict[str, object], field: str
) -> None:
    admin = _actor()
    created = await _create(rpc, admin, description="before")
    with pytest.raises(ServiceError) as exc:
        await rpc.call_raw(
            endpoints.Webhooks.UPDATE_ENDPOINT, {"actor": admin, "id": created.id, "endpoint": change}
        )
    assert exc.value.status == 422
    assert exc.value.field is not None and exc.value.field.startswith(field)
    after: WebhookEndpointPublic = await rpc.call_raw(
        endpoints.Webhooks.GET_ENDPOINT, {"actor": admin, "id": created.id}
    )
    assert (after.description, after.url, after.events) == ("before", created.url, created.events)


async def test_a_task_url_endpoint_takes_no_url_or_events(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver
) -> None:
    admin = Actor.model_validate(_actor())
    await publish(js, event(admin, "task.created", webhook_url=receiver.url(path())))
    listed = await until(lambda: rpc.call(endpoints.Webhooks.LIST_ENDPOINTS, OrgScoped(actor=admin)))
    [implicit] = listed
    assert implicit.kind == "task_url"
    body = {"actor": admin.model_dump(), "id": implicit.id}
    with pytest.raises(ServiceError) as exc:
        await rpc.call_raw(
            endpoints.Webhooks.UPDATE_ENDPOINT,
            {**body, "endpoint": {"description": "half", "url": "http://127.0.0.1:9/other"}},
        )
    assert (exc.value.status, exc.value.field) == (422, "endpoint.url")
    with pytest.raises(ServiceError) as exc:
        await rpc.call_raw(endpoints.Webhooks.ROTATE_SECRET, body)
    assert (exc.value.status, exc.value.field) == (422, "id")
    after: WebhookEndpointPublic = await rpc.call_raw(endpoints.Webhooks.GET_ENDPOINT, body)
    assert (after.description, after.url) == (implicit.description, implicit.url)
    renamed: WebhookEndpointPublic = await rpc.call_raw(
        endpoints.Webhooks.UPDATE_ENDPOINT, {**body, "endpoint": {"description": "orders"}}
    )
    assert renamed.description == "orders"
