"""Organization deletion: the running webhooks service consumes `organization.deleted` from EVENTS (real NATS,
real PostgreSQL) and removes that org's endpoints, deliveries and delivery log, once, leaving other orgs alone.

The webhook receiver is a local HTTP server on 127.0.0.1 standing in for a customer's system."""

from __future__ import annotations

import uuid

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Actor, OrgScoped
from browserfleet_core.messaging import RpcClient
from browserfleet_core.org_events import durable_name
from browserfleet_devkit.testing import publish_org_deleted_twice, wait_consumed
from browserfleet_webhooks.app import WebhooksService
from browserfleet_webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhooksBase
from browserfleet_webhooks.repository import NOT_ORG_SCOPED, purge_org
from nats.js import JetStreamContext
from sqlmodel import col, func, select

from .conftest import Receiver
from .helpers import endpoint as _endpoint
from .helpers import event as _event
from .helpers import publish as _publish
from .helpers import settled as _settled


def test_every_table_is_org_scoped_or_named() -> None:
    unscoped = {t.name for t in WebhooksBase.metadata.sorted_tables if "org_id" not in t.c}
    assert unscoped == NOT_ORG_SCOPED


def _org() -> Actor:
    return Actor(org_id=f"org-{uuid.uuid4().hex[:8]}", user_id="admin-1", role="admin")


async def _counts(service: WebhooksService, org_id: str) -> tuple[int, int, int]:
    async with service.db.transaction() as s:
        endpoints = (await s.exec(select(func.count()).where(col(WebhookEndpoint.org_id) == org_id))).one()
        deliveries = select(col(WebhookDelivery.id)).where(col(WebhookDelivery.org_id) == org_id)
        n_deliveries = (await s.exec(select(func.count()).where(col(WebhookDelivery.org_id) == org_id))).one()
        attempts = (
            await s.exec(select(func.count()).where(col(WebhookAttempt.delivery_id).in_(deliveries)))
        ).one()
    return endpoints, n_deliveries, attempts


async def _with_deliveries(rpc: RpcClient, js: JetStreamContext, receiver: Receiver, who: Actor) -> None:
    """Two endpoints, two events: the first event reaches one endpoint, the second both (3 deliveries)."""
    for _ in range(2):
        endpoint = await _endpoint(rpc, who, receiver.url(f"/hook/{uuid.uuid4().hex}"), ["task.completed"])
        await _publish(js, _event(who))
        await _settled(rpc, who, endpoint.id)


async def test_organization_deleted_removes_endpoints_and_deliveries_once(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    gone, kept = _org(), _org()
    await _with_deliveries(rpc, js, receiver, gone)
    await _with_deliveries(rpc, js, receiver, kept)
    assert await _counts(service, gone.org_id) == (2, 3, 3)
    assert await _counts(service, kept.org_id) == (2, 3, 3)

    seq = await publish_org_deleted_twice(js, gone.org_id)
    await wait_consumed(js, subjects.EVENTS_STREAM, durable_name("webhooks"), seq)

    assert await _counts(service, gone.org_id) == (0, 0, 0)
    listed = await rpc.call(endpoints.Webhooks.LIST_ENDPOINTS, OrgScoped(actor=gone))
    assert listed == []
    assert await _counts(service, kept.org_id) == (2, 3, 3), "another organization is untouched"
    async with service.db.transaction() as s:
        assert set((await purge_org(s, gone.org_id)).values()) == {0}, "a third delivery removes nothing"
