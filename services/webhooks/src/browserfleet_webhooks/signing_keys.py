"""Signing secrets: made, sealed, shown to admins, rotated with an overlap, and opened to sign deliveries.

Every endpoint has its own secret; tasks' `webhook_url` deliveries are signed with the organization's (made on
first use). A rotation keeps the previous secret signing until the overlap ends, so each delivery meanwhile
carries two signatures and a receiver holding either secret verifies it; a second rotation before the overlap
ended would drop a secret the receiver may still hold, so it is refused (409).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from browserfleet_contracts.webhooks import WebhookSecretPublic
from browserfleet_core.db import AsyncSession, new_id
from browserfleet_core.errors import Conflict

from . import repository, signing
from .crypto import SealError, SecretBox
from .models import TASK_URL, WebhookSigningKey

log = logging.getLogger(__name__)


def _sealed_key(
    box: SecretBox, org_id: str, endpoint_id: str | None, secret: str, now: datetime
) -> WebhookSigningKey:
    """A new key row holding `secret`, sealed to the row (its id is in the sealing's associated data)."""
    key_id = new_id()
    sealed, version = box.seal(org_id, key_id, secret)
    return WebhookSigningKey(
        id=key_id, org_id=org_id, endpoint_id=endpoint_id, sealed=sealed, key_version=version, created_at=now
    )


def _new_key(
    box: SecretBox, org_id: str, endpoint_id: str | None, now: datetime
) -> tuple[WebhookSigningKey, str]:
    secret = signing.generate_secret()
    return _sealed_key(box, org_id, endpoint_id, secret, now), secret


def _open(box: SecretBox, key: WebhookSigningKey) -> str:
    return box.open(key.org_id, key.id, key.sealed, key.key_version)


async def create_endpoint_key(
    session: AsyncSession, box: SecretBox, org_id: str, endpoint_id: str, now: datetime
) -> str:
    """A new endpoint's first secret (returned in clear this once; stored sealed)."""
    key, secret = _new_key(box, org_id, endpoint_id, now)
    await repository.save(session, key)
    return secret


async def ensure_org_key(session: AsyncSession, box: SecretBox, org_id: str, now: datetime) -> None:
    """The organization's secret for tasks' `webhook_url`, made on first use (idempotent under concurrency)."""
    if await repository.current_key(session, org_id, None) is not None:
        return
    key_id = new_id()
    sealed, version = box.seal(org_id, key_id, signing.generate_secret())
    await repository.insert_org_key_if_missing(session, org_id, sealed, version, key_id, now=now)


def _public(box: SecretBox, keys: Sequence[WebhookSigningKey], now: datetime) -> WebhookSecretPublic:
    current = next(k for k in keys if k.expires_at is None)
    overlapping = [k.expires_at for k in keys if k.expires_at is not None and k.expires_at > now]
    return WebhookSecretPublic(
        secret=_open(box, current),
        created_at=current.created_at,
        previous_expires_at=max(overlapping) if overlapping else None,
    )


async def show(
    session: AsyncSession, box: SecretBox, org_id: str, endpoint_id: str | None, now: datetime
) -> WebhookSecretPublic:
    """The current secret of an endpoint (`endpoint_id`) or of the organization (None)."""
    if endpoint_id is None:
        await ensure_org_key(session, box, org_id, now)
    keys = await repository.keys_of(session, org_id, endpoint_id)
    if not any(k.expires_at is None for k in keys):
        # an endpoint made before secrets were sealed, whose secret the start-up has not sealed yet
        raise Conflict("the endpoint's secret is being sealed; try again shortly", code="secret_not_ready")
    return _public(box, keys, now)


async def rotate(
    session: AsyncSession,
    box: SecretBox,
    org_id: str,
    endpoint_id: str | None,
    *,
    now: datetime,
    overlap_seconds: float,
) -> WebhookSecretPublic:
    """Replace the current secret; the previous one keeps signing for `overlap_seconds`. 409 while an earlier
    rotation's overlap lasts."""
    await repository.lock_owner(session, org_id, endpoint_id)
    if endpoint_id is None:
        await ensure_org_key(session, box, org_id, now)
    keys = await repository.keys_of(session, org_id, endpoint_id)
    overlapping = [k.expires_at for k in keys if k.expires_at is not None and k.expires_at > now]
    if overlapping:
        raise Conflict(
            f"the previous secret still signs deliveries until {max(overlapping).isoformat()}; "
            "rotate again after that",
            code="rotation_in_overlap",
        )
    await repository.delete_expired_keys(session, org_id, endpoint_id, now=now)
    for key in keys:
        if key.expires_at is None:
            key.expires_at = now + timedelta(seconds=overlap_seconds)
            await repository.save(session, key)  # flushed before the new current key exists
    new_key, _ = _new_key(box, org_id, endpoint_id, now)
    await repository.save(session, new_key)
    return _public(box, await repository.keys_of(session, org_id, endpoint_id), now)


async def signing_secrets(
    session: AsyncSession, box: SecretBox, claimed: Sequence[repository.Claimed], now: datetime
) -> dict[str, list[str]]:
    """For each claimed delivery's endpoint, the secrets that sign it now, newest first: the endpoint's own,
    or its organization's for a `task_url` endpoint."""
    endpoint_ids = {c.endpoint_id for c in claimed if c.kind != TASK_URL}
    org_ids = {c.org_id for c in claimed if c.kind == TASK_URL}
    keys = await repository.live_keys(session, endpoint_ids=endpoint_ids, org_ids=org_ids, now=now)
    by_endpoint: dict[str, list[str]] = {}
    by_org: dict[str, list[str]] = {}
    for key in keys:  # newest first
        try:
            secret = _open(box, key)
        except SealError:
            # one key sealed under a master key this process lacks fails its own deliveries (no secret: the
            # attempt fails and is retried), never everyone's
            log.error("webhook signing key %s cannot be opened: %s", key.id, "check WEBHOOK_MASTER_KEY")
            continue
        owner = (
            by_endpoint.setdefault(key.endpoint_id, [])
            if key.endpoint_id
            else by_org.setdefault(key.org_id, [])
        )
        owner.append(secret)
    return {
        c.endpoint_id: (
            by_org.get(c.org_id, []) if c.kind == TASK_URL else by_endpoint.get(c.endpoint_id, [])
        )
        for c in claimed
    }


async def seal_legacy(session: AsyncSession, box: SecretBox, now: datetime) -> int:
    """Seal the secrets endpoints kept in clear before secrets were sealed, and clear the column (at start).
    The secret itself is unchanged, so receivers notice nothing. Returns how many were sealed."""
    sealed = 0
    for endpoint in await repository.legacy_secrets(session):
        secret = endpoint.secret
        assert secret is not None
        if await repository.current_key(session, endpoint.org_id, endpoint.id) is None:
            await repository.save(session, _sealed_key(box, endpoint.org_id, endpoint.id, secret, now))
        await repository.clear_legacy_secret(session, endpoint.id)
        sealed += 1
    return sealed
