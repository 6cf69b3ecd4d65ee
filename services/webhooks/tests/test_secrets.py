"""Signing secrets: sealed at rest (never in clear in a table), rotated with an overlap during which every
delivery carries both signatures (`v1,<new> v1,<old>`), verified here with the official `standardwebhooks`
library; a second rotation during the overlap is a 409. Secrets an older version stored in clear are sealed
at start.

The webhook receiver is a local HTTP server on 127.0.0.1 standing in for a customer's system.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import ById, OrgScoped
from browserfleet_contracts.webhooks import WebhookSecretPublic
from browserfleet_core.db import utcnow
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_webhooks.app import WebhooksService
from browserfleet_webhooks.crypto import SealError, SecretBox
from browserfleet_webhooks.models import WebhookEndpoint, WebhookSigningKey
from nats.js import JetStreamContext
from sqlalchemy import text
from sqlmodel import col, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .conftest import Receiver, Running
from .helpers import endpoint, event, org, org_endpoint, path, publish, settled, until


async def _table_bytes(service: WebhooksService) -> bytes:
    """Everything the webhooks schema's endpoint and key tables hold, as text."""
    async with service.db.transaction() as session:
        rows = (
            await session.exec(  # type: ignore[call-overload]
                text(
                    "SELECT row_to_json(e)::text FROM webhooks.webhook_endpoints e "
                    "UNION ALL SELECT row_to_json(k)::text FROM webhooks.webhook_signing_keys k"
                )
            )
        ).all()
    return "\n".join(r[0] for r in rows).encode()


async def test_secrets_are_never_stored_in_clear(
    rpc: RpcClient, receiver: Receiver, service: WebhooksService
) -> None:
    actor = org()
    ep = await endpoint(rpc, actor, receiver.url(path()), ["*"])
    org_secret: WebhookSecretPublic = await rpc.call(
        endpoints.Webhooks.GET_ORG_SECRET, OrgScoped(actor=actor)
    )
    assert ep.secret is not None and org_secret.secret.startswith("whsec_")
    stored = await _table_bytes(service)
    for secret in (ep.secret, org_secret.secret):
        assert secret.encode() not in stored
        assert secret.removeprefix("whsec_").encode() not in stored
    # the sealed key opens only as itself: moved to another org or row, it fails authentication
    async with service.db.transaction() as session:
        key = (
            await session.exec(select(WebhookSigningKey).where(col(WebhookSigningKey.endpoint_id) == ep.id))
        ).one()
    box = service.runtime.box
    assert box.open(key.org_id, key.id, key.sealed, key.key_version) == ep.secret
    with pytest.raises(SealError):
        box.open("another-org", key.id, key.sealed, key.key_version)
    with pytest.raises(SealError):
        box.open(key.org_id, str(uuid.uuid4()), key.sealed, key.key_version)
    # the admin may read it again
    shown: WebhookSecretPublic = await rpc.call(endpoints.Webhooks.GET_SECRET, ById(actor=actor, id=ep.id))
    assert (shown.secret, shown.previous_expires_at) == (ep.secret, None)


async def test_rotation_signs_with_both_secrets_during_the_overlap(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
    assert ep.secret is not None
    old = Webhook(ep.secret)

    before = event(actor)
    await publish(js, before)
    [first] = await receiver.wait_for(p, 1)
    assert old.verify(first.body, first.headers)["event"] == "task.completed"
    assert len(first.headers["webhook-signature"].split(" ")) == 1

    rotated: WebhookSecretPublic = await rpc.call(
        endpoints.Webhooks.ROTATE_SECRET, ById(actor=actor, id=ep.id)
    )
    assert rotated.secret != ep.secret
    assert rotated.previous_expires_at is not None and rotated.previous_expires_at > utcnow()
    new = Webhook(rotated.secret)
    with pytest.raises(WebhookVerificationError):
        new.verify(first.body, first.headers)  # the new secret did not sign what went before

    during = event(actor)
    await publish(js, during)
    _, second = await receiver.wait_for(p, 2)
    signatures = second.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    # a receiver holding either secret verifies it: nobody has to switch at the same instant
    assert old.verify(second.body, second.headers)["data"]["task_id"] == during.data["task_id"]
    assert new.verify(second.body, second.headers)["data"]["task_id"] == during.data["task_id"]
    assert signatures[0] == new.sign(second.headers["webhook-id"], _ts(second.headers), second.body)

    # rotating again while the overlap lasts would drop a secret receivers may still hold
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Webhooks.ROTATE_SECRET, ById(actor=actor, id=ep.id))
    assert (exc.value.status, exc.value.code) == (409, "rotation_in_overlap")
    shown: WebhookSecretPublic = await rpc.call(endpoints.Webhooks.GET_SECRET, ById(actor=actor, id=ep.id))
    assert shown.secret == rotated.secret  # nothing half-written by the refused rotation
    await settled(rpc, actor, ep.id, count=2)


async def test_after_the_overlap_only_the_new_secret_signs(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, running: Running
) -> None:
    """WEBHOOK_SECRET_OVERLAP_SECONDS is a tenth of a second here (a day by default)."""
    async with running.configured(webhook_secret_overlap_seconds=0.1):
        actor, p, ep = await org_endpoint(rpc, receiver, ["task.completed"])
        assert ep.secret is not None
        rotated: WebhookSecretPublic = await rpc.call(
            endpoints.Webhooks.ROTATE_SECRET, ById(actor=actor, id=ep.id)
        )
        assert rotated.previous_expires_at is not None

        expires = rotated.previous_expires_at
        await until(lambda: utcnow() > expires)
        await publish(js, event(actor))
        [request] = await receiver.wait_for(p, 1)
        assert len(request.headers["webhook-signature"].split(" ")) == 1
        Webhook(rotated.secret).verify(request.body, request.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(ep.secret).verify(request.body, request.headers)
        # and a rotation is allowed again
        again: WebhookSecretPublic = await rpc.call(
            endpoints.Webhooks.ROTATE_SECRET, ById(actor=actor, id=ep.id)
        )
        assert again.secret not in (ep.secret, rotated.secret)


async def test_organization_secret_rotates_like_an_endpoints(
    rpc: RpcClient, service: WebhooksService
) -> None:
    actor = org()
    first: WebhookSecretPublic = await rpc.call(endpoints.Webhooks.GET_ORG_SECRET, OrgScoped(actor=actor))
    again: WebhookSecretPublic = await rpc.call(endpoints.Webhooks.GET_ORG_SECRET, OrgScoped(actor=actor))
    assert first.secret == again.secret  # made once, on first use
    rotated: WebhookSecretPublic = await rpc.call(
        endpoints.Webhooks.ROTATE_ORG_SECRET, OrgScoped(actor=actor)
    )
    assert rotated.secret != first.secret and rotated.previous_expires_at is not None
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Webhooks.ROTATE_ORG_SECRET, OrgScoped(actor=actor))
    assert exc.value.status == 409
    other: WebhookSecretPublic = await rpc.call(endpoints.Webhooks.GET_ORG_SECRET, OrgScoped(actor=org()))
    assert other.secret not in (first.secret, rotated.secret)
    for role in ("user", "viewer"):
        with pytest.raises(ServiceError) as exc:
            await rpc.call(endpoints.Webhooks.GET_ORG_SECRET, OrgScoped(actor=org(role, actor.org_id)))
        assert exc.value.status == 403


async def test_a_secret_stored_in_clear_by_an_older_version_is_sealed_at_start(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, running: Running
) -> None:
    assert running.svc is not None
    actor = org()
    p = path()
    legacy_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    async with running.svc.db.transaction() as session:
        session.add(
            WebhookEndpoint(
                org_id=actor.org_id, url=receiver.url(p), events=["task.completed"], secret=legacy_secret
            )
        )
    svc = await running.restart()
    assert legacy_secret.encode() not in await _table_bytes(svc)
    await publish(js, event(actor))
    [request] = await receiver.wait_for(p, 1)
    Webhook(legacy_secret).verify(request.body, request.headers)  # receivers notice nothing


def _ts(headers: dict[str, str]) -> datetime:
    return datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)


async def test_a_key_this_process_cannot_open_fails_only_its_own_deliveries(
    rpc: RpcClient, js: JetStreamContext, receiver: Receiver, service: WebhooksService
) -> None:
    """A key sealed under a master key the service does not hold (a wrong WEBHOOK_MASTER_KEY) fails that
    endpoint's attempts, which are retried; every other endpoint is delivered as usual."""
    actor = org()
    broken_path, fine_path = path(), path()
    broken = await endpoint(rpc, actor, receiver.url(broken_path), ["task.completed"])
    await endpoint(rpc, actor, receiver.url(fine_path), ["task.completed"])
    elsewhere = SecretBox(current_version=9, keys={9: os.urandom(32)})
    async with service.db.transaction() as session:
        key = (
            await session.exec(
                select(WebhookSigningKey).where(col(WebhookSigningKey.endpoint_id) == broken.id)
            )
        ).one()
        key.sealed, key.key_version = elsewhere.seal(key.org_id, key.id, "whsec_" + "A" * 43)
        session.add(key)
    await publish(js, event(actor))
    await receiver.wait_for(fine_path, 1)
    [failed] = await settled(rpc, actor, broken.id)
    assert failed.status == "dead" and receiver.on(broken_path) == []
    assert failed.error is not None and "no signing secret" in failed.error
