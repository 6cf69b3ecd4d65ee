"""The request/reply API over real NATS: roles, org scoping, validation, secrets shown once."""

from __future__ import annotations

import uuid

import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.common import Ack, Actor
from browserfleet_contracts.webhooks import WebhookDeliveryPublic, WebhookEndpointPublic
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient


def _actor(role: str = "admin", org: str | None = None) -> dict[str, str]:
    return Actor(org_id=org or f"org-{uuid.uuid4().hex[:8]}", user_id="u1", role=role).model_dump()  # type: ignore[arg-type]


async def _create(rpc: RpcClient, actor: dict[str, str], **endpoint: object) -> WebhookEndpointPublic:
    body = {"actor": actor, "endpoint": {"url": "http://127.0.0.1:9/hook", **endpoint}}
    result: WebhookEndpointPublic = await rpc.call(
        subjects.Webhooks.CREATE_ENDPOINT, body, WebhookEndpointPublic
    )
    return result


async def test_create_list_delete(rpc: RpcClient) -> None:
    admin = _actor()
    created = await _create(
        rpc, admin, events=["task.completed", "task.*", "task.completed"], description="ci"
    )
    assert created.secret is not None
    assert created.secret.startswith("whsec_")
    assert created.events == ["task.*", "task.completed"]
    listed: list[WebhookEndpointPublic] = await rpc.call(
        subjects.Webhooks.LIST_ENDPOINTS, {"actor": admin}, list[WebhookEndpointPublic]
    )
    assert [e.id for e in listed] == [created.id]
    assert listed[0].secret is None  # shown once, at creation
    assert listed[0].description == "ci"

    ack: Ack = await rpc.call(subjects.Webhooks.DELETE_ENDPOINT, {"actor": admin, "id": created.id}, Ack)
    assert ack.ok
    assert (
        await rpc.call(subjects.Webhooks.LIST_ENDPOINTS, {"actor": admin}, list[WebhookEndpointPublic]) == []
    )


async def test_non_admin_cannot_create_or_delete(rpc: RpcClient) -> None:
    admin = _actor()
    created = await _create(rpc, admin)
    viewer = _actor("viewer", org=admin["org_id"])
    with pytest.raises(ServiceError) as exc:
        await _create(rpc, viewer)
    assert exc.value.status == 403
    with pytest.raises(ServiceError) as exc:
        await rpc.call(subjects.Webhooks.DELETE_ENDPOINT, {"actor": viewer, "id": created.id}, Ack)
    assert exc.value.status == 403
    # a viewer may still look
    listed = await rpc.call(subjects.Webhooks.LIST_ENDPOINTS, {"actor": viewer}, list[WebhookEndpointPublic])
    assert len(listed) == 1


async def test_other_orgs_endpoint_is_not_found(rpc: RpcClient) -> None:
    owner = _actor()
    created = await _create(rpc, owner)
    intruder = _actor()
    with pytest.raises(ServiceError) as exc:
        await rpc.call(subjects.Webhooks.DELETE_ENDPOINT, {"actor": intruder, "id": created.id}, Ack)
    assert exc.value.status == 404
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            subjects.Webhooks.LIST_DELIVERIES,
            {"actor": intruder, "endpoint_id": created.id},
            list[WebhookDeliveryPublic],
        )
    assert exc.value.status == 404
    assert exc.value.field == "endpoint_id"
    assert (
        await rpc.call(subjects.Webhooks.LIST_ENDPOINTS, {"actor": intruder}, list[WebhookEndpointPublic])
        == []
    )
    # still there for its owner
    assert (
        len(await rpc.call(subjects.Webhooks.LIST_ENDPOINTS, {"actor": owner}, list[WebhookEndpointPublic]))
        == 1
    )


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ({"url": "not a url"}, "endpoint.url"),
        ({"url": "ftp://example.com/x"}, "endpoint.url"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["Task Completed"]}, "endpoint.events"),
        ({"url": "http://127.0.0.1:9/hook", "events": []}, "endpoint.events"),
        ({"url": "http://127.0.0.1:9/hook", "secret": "mine"}, "endpoint.secret"),
    ],
)
async def test_invalid_endpoint_names_the_field(
    rpc: RpcClient, endpoint: dict[str, object], field: str
) -> None:
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            subjects.Webhooks.CREATE_ENDPOINT,
            {"actor": _actor(), "endpoint": endpoint},
            WebhookEndpointPublic,
        )
    assert exc.value.status == 422
    assert exc.value.field is not None
    assert exc.value.field.startswith(field)
