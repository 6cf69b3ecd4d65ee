"""Webhook endpoints: register, list, read, update, delete, and their secrets (shown and rotated).

Takes a session and plain values; never commits (the caller's `Database.transaction()` does).
"""

from __future__ import annotations

from datetime import datetime

from browserfleet_contracts.common import Actor
from browserfleet_contracts.webhooks import (
    CircuitState,
    WebhookEndpointCreate,
    WebhookEndpointPublic,
    WebhookEndpointUpdate,
    WebhookSecretPublic,
)
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import Forbidden, Invalid, NotFound
from browserfleet_core.lookup import found
from browserfleet_core.projection import project

from . import repository, signing_keys, targets
from .crypto import SecretBox
from .models import ENDPOINT, TASK_URL, WebhookEndpoint


def require_admin(actor: Actor) -> None:
    if actor.role != "admin":
        raise Forbidden("only an org admin can manage webhook endpoints", code="forbidden")


def circuit(endpoint: WebhookEndpoint, circuit_failures: int, now: datetime) -> CircuitState:
    if endpoint.consecutive_failures < circuit_failures:
        return "closed"
    if endpoint.circuit_open_until is not None and endpoint.circuit_open_until > now:
        return "open"
    return "half_open"


def endpoint_public(
    endpoint: WebhookEndpoint,
    *,
    circuit_failures: int,
    secret: str | None = None,
    now: datetime | None = None,
) -> WebhookEndpointPublic:
    return project(
        WebhookEndpointPublic,
        endpoint,
        kind="task_url" if endpoint.kind == TASK_URL else "endpoint",
        circuit=circuit(endpoint, circuit_failures, now or utcnow()),
        secret=secret,
    )


async def _check_url(url: str, *, allow_private: bool) -> None:
    try:
        await targets.check(url, allow_private=allow_private)
    except targets.TargetRefused as exc:
        raise Invalid(f"endpoint.url: {exc}", field="endpoint.url") from None


async def find(
    session: AsyncSession, actor: Actor, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    endpoint = await repository.get_endpoint(session, actor.org_id, endpoint_id, lock=lock)
    return found(endpoint, "webhook endpoint not found", field="id")


async def create_endpoint(
    session: AsyncSession,
    box: SecretBox,
    actor: Actor,
    data: WebhookEndpointCreate,
    *,
    allow_private: bool,
    circuit_failures: int,
) -> WebhookEndpointPublic:
    """Register an endpoint; the reply is the only time its secret is shown unasked."""
    require_admin(actor)
    url = str(data.url)
    await _check_url(url, allow_private=allow_private)
    now = utcnow()
    endpoint = WebhookEndpoint(
        org_id=actor.org_id,
        kind=ENDPOINT,
        url=url,
        events=list(data.events),
        description=data.description,
        created_by=actor.user_id or actor.api_key_id,
        created_at=now,
        updated_at=now,
    )
    await repository.save(session, endpoint)
    secret = await signing_keys.create_endpoint_key(session, box, actor.org_id, endpoint.id, now)
    return endpoint_public(endpoint, circuit_failures=circuit_failures, secret=secret, now=now)


async def list_endpoints(
    session: AsyncSession, actor: Actor, *, circuit_failures: int
) -> list[WebhookEndpointPublic]:
    now = utcnow()
    return [
        endpoint_public(e, circuit_failures=circuit_failures, now=now)
        for e in await repository.list_endpoints(session, actor.org_id)
    ]


async def get_endpoint(
    session: AsyncSession, actor: Actor, endpoint_id: str, *, circuit_failures: int
) -> WebhookEndpointPublic:
    return endpoint_public(await find(session, actor, endpoint_id), circuit_failures=circuit_failures)


async def update_endpoint(
    session: AsyncSession,
    actor: Actor,
    endpoint_id: str,
    data: WebhookEndpointUpdate,
    *,
    allow_private: bool,
    circuit_failures: int,
) -> WebhookEndpointPublic:
    """Change what was given. Everything is checked before anything is written."""
    require_admin(actor)
    endpoint = await find(session, actor, endpoint_id, lock=True)
    if endpoint.kind == TASK_URL:
        for name, value in (("url", data.url), ("events", data.events)):
            if value is not None:
                raise Invalid(
                    f"endpoint.{name}: a task_url endpoint takes its URL from tasks' webhook_url and "
                    "receives only their events; change description or enabled",
                    field=f"endpoint.{name}",
                )
    if data.url is not None:
        await _check_url(str(data.url), allow_private=allow_private)
    now = utcnow()
    if data.url is not None:
        endpoint.url = str(data.url)
    if data.events is not None:
        endpoint.events = list(data.events)
    if data.description is not None:
        endpoint.description = data.description or None
    if data.enabled is not None and data.enabled != endpoint.enabled:
        endpoint.enabled = data.enabled
        if data.enabled:
            # a fresh start: what waited for it goes out now, and the failure window counts from zero
            endpoint.disabled_reason = None
            endpoint.disabled_at = None
            endpoint.failing_since = None
            endpoint.consecutive_failures = 0
            endpoint.circuit_open_until = None
        else:
            endpoint.disabled_reason = "admin"
            endpoint.disabled_at = now
    endpoint.updated_at = now
    await repository.save(session, endpoint)
    return endpoint_public(endpoint, circuit_failures=circuit_failures, now=now)


async def delete_endpoint(session: AsyncSession, actor: Actor, endpoint_id: str) -> None:
    """Delete an endpoint with its keys and delivery log; deliveries still queued for it are never sent."""
    require_admin(actor)
    if not await repository.delete_endpoint(session, actor.org_id, endpoint_id):
        raise NotFound("webhook endpoint not found", field="id")


async def get_secret(
    session: AsyncSession, box: SecretBox, actor: Actor, endpoint_id: str | None
) -> WebhookSecretPublic:
    """An endpoint's secret, or (None) the organization's for tasks' `webhook_url`: admins only."""
    require_admin(actor)
    owner = None
    if endpoint_id is not None:
        endpoint = await find(session, actor, endpoint_id)
        # a task_url endpoint is signed with the organization's secret
        owner = None if endpoint.kind == TASK_URL else endpoint.id
    return await signing_keys.show(session, box, actor.org_id, owner, utcnow())


async def rotate_secret(
    session: AsyncSession, box: SecretBox, actor: Actor, endpoint_id: str | None, *, overlap_seconds: float
) -> WebhookSecretPublic:
    require_admin(actor)
    owner = None
    if endpoint_id is not None:
        endpoint = await find(session, actor, endpoint_id, lock=True)
        if endpoint.kind == TASK_URL:
            raise Invalid(
                "id: a task_url endpoint is signed with the organization's secret; rotate that one",
                field="id",
            )
        owner = endpoint.id
    return await signing_keys.rotate(
        session, box, actor.org_id, owner, now=utcnow(), overlap_seconds=overlap_seconds
    )
