"""What the webhooks tests share: an org, an endpoint, an event on the real EVENTS stream, and waiting for
deliveries to settle (the caps only stop a hang; nothing asserts on time)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Actor, ById
from browserfleet_contracts.events import EventEnvelope
from browserfleet_contracts.webhooks import (
    CreateEndpointRequest,
    ListDeliveriesRequest,
    WebhookDeliveryDetail,
    WebhookDeliveryPublic,
    WebhookEndpointCreate,
    WebhookEndpointPublic,
)
from browserfleet_core.messaging import RpcClient
from nats.js import JetStreamContext

from .conftest import Receiver

CAP = 30.0


def org(role: str = "admin", org_id: str | None = None) -> Actor:
    return Actor(org_id=org_id or f"org-{uuid.uuid4().hex[:8]}", user_id="admin-1", role=role)


def path() -> str:
    return f"/hook/{uuid.uuid4().hex}"


async def endpoint(rpc: RpcClient, actor: Actor, url: str, events: list[str]) -> WebhookEndpointPublic:
    req = CreateEndpointRequest(
        actor=actor, endpoint=WebhookEndpointCreate.model_validate({"url": url, "events": events})
    )
    created: WebhookEndpointPublic = await rpc.call(endpoints.Webhooks.CREATE_ENDPOINT, req)
    assert created.secret is not None
    return created


async def org_endpoint(
    rpc: RpcClient, receiver: Receiver, events: list[str]
) -> tuple[Actor, str, WebhookEndpointPublic]:
    """A new org with an endpoint on a path of the receiver of its own: (the org's admin, the path, the
    endpoint)."""
    actor, p = org(), path()
    return actor, p, await endpoint(rpc, actor, receiver.url(p), events)


def event(
    actor: Actor, event_type: str = "task.completed", *, webhook_url: str | None = None, **data: object
) -> EventEnvelope:
    task_id = str(uuid.uuid4())
    return EventEnvelope(
        id=f"{task_id}:1:{event_type.split('.', 1)[1]}",
        type=event_type,
        org_id=actor.org_id,
        occurred_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        data={"task_id": task_id, "status": event_type.split(".", 1)[1], **data},
        webhook_url=webhook_url,
    )


async def publish(js: JetStreamContext, e: EventEnvelope, msg_id: str | None = None) -> None:
    await js.publish(
        subjects.event(e.org_id, e.type),
        e.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or e.id},
    )


async def deliveries(
    rpc: RpcClient, actor: Actor, endpoint_id: str, **filters: Any
) -> list[WebhookDeliveryPublic]:
    req = ListDeliveriesRequest(actor=actor, endpoint_id=endpoint_id, limit=500, **filters)
    result: list[WebhookDeliveryPublic] = await rpc.call(endpoints.Webhooks.LIST_DELIVERIES, req)
    return result


async def detail(rpc: RpcClient, actor: Actor, delivery_id: str) -> WebhookDeliveryDetail:
    result: WebhookDeliveryDetail = await rpc.call(
        endpoints.Webhooks.GET_DELIVERY, ById(actor=actor, id=delivery_id)
    )
    return result


async def get_endpoint(rpc: RpcClient, actor: Actor, endpoint_id: str) -> WebhookEndpointPublic:
    result: WebhookEndpointPublic = await rpc.call(
        endpoints.Webhooks.GET_ENDPOINT, ById(actor=actor, id=endpoint_id)
    )
    return result


async def until(check: Callable[[], Any], cap: float = CAP) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; returns it."""

    async def poll() -> Any:
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), cap)


async def settled(
    rpc: RpcClient, actor: Actor, endpoint_id: str, count: int = 1, cap: float = CAP
) -> list[WebhookDeliveryPublic]:
    """The endpoint's deliveries once there are `count` and none is still pending or awaiting a retry."""

    async def done() -> list[WebhookDeliveryPublic] | None:
        rows = await deliveries(rpc, actor, endpoint_id)
        if len(rows) >= count and all(d.status in ("succeeded", "dead") for d in rows):
            return rows
        return None

    result: list[WebhookDeliveryPublic] = await until(done, cap)
    return result
