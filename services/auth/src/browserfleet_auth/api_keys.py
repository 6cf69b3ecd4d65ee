"""API keys (`sk_api_…`): created, listed and revoked by org admins, verified for the gateway. Only the
key's SHA-256 is stored; the key itself is in the creating reply only."""

from __future__ import annotations

from datetime import timedelta

from browserfleet_contracts.auth import (
    API_KEY_PREFIX,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPrincipal,
    ApiKeyPublic,
)
from browserfleet_contracts.common import Actor
from browserfleet_core import security
from browserfleet_core.db import AsyncSession
from browserfleet_core.errors import Invalid, NotFound, Unauthorized
from browserfleet_core.projection import project

from . import audit
from . import repository as repo
from .access import require_admin
from .config import AuthConfig
from .models import ApiKey
from .validation import clean_name


async def create_api_key(
    session: AsyncSession, config: AuthConfig, actor: Actor, body: ApiKeyCreate
) -> ApiKeyCreated:
    require_admin(actor)
    name = clean_name(body.name, field="name")
    now = config.now()
    if body.expires_at is not None:
        if body.expires_at.tzinfo is None:
            raise Invalid("expires_at: needs a timezone", field="expires_at")
        if body.expires_at <= now:
            raise Invalid("expires_at: must be in the future", field="expires_at")
    raw = security.new_token(API_KEY_PREFIX)
    key = ApiKey(
        org_id=actor.org_id,
        name=name,
        prefix=raw[: len(API_KEY_PREFIX) + 4],
        key_hash=security.hash_token(raw),
        scopes=sorted(set(body.scopes)),
        expires_at=body.expires_at,
        created_by=actor.user_id or actor.api_key_id,
        created_at=now,
    )
    await repo.add(session, key)
    await audit.record(
        session, config.now(), "api_key.created", actor=actor, target=key.id, detail={"scopes": key.scopes}
    )
    return ApiKeyCreated(**api_key_public(key).model_dump(), key=raw)


async def list_api_keys(session: AsyncSession, actor: Actor) -> list[ApiKeyPublic]:
    require_admin(actor)
    return [api_key_public(k) for k in await repo.org_api_keys(session, actor.org_id)]


async def revoke_api_key(
    session: AsyncSession, config: AuthConfig, actor: Actor, key_id: str
) -> ApiKeyPublic:
    """Idempotent; another org's key is a 404. The caller broadcasts the revocation after commit."""
    require_admin(actor)
    key = await repo.get_org_api_key(session, actor.org_id, key_id)
    if key is None:
        raise NotFound("API key not found", code="api_key_not_found")
    if key.revoked_at is None:
        key.revoked_at = config.now()
        session.add(key)
        await audit.record(session, config.now(), "api_key.revoked", actor=actor, target=key.id)
    return api_key_public(key)


async def authenticate_api_key(session: AsyncSession, config: AuthConfig, raw: str) -> ApiKeyPrincipal:
    key = None
    if raw.startswith(API_KEY_PREFIX):
        key = await repo.get_api_key_by_hash(session, security.hash_token(raw))
    now = config.now()
    if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise Unauthorized("invalid, revoked or expired API key", code="invalid_api_key")
    org = await repo.get_organization(session, key.org_id)
    if org is None:
        raise Unauthorized("invalid, revoked or expired API key", code="invalid_api_key")
    # The gateway caches a verified key briefly, so this write happens about once per key per second
    # at most; coarser still, once a minute is plenty for "last used".
    if key.last_used_at is None or now - key.last_used_at > timedelta(seconds=60):
        await repo.touch_api_key(session, key.id, now)
    return ApiKeyPrincipal(
        org_id=key.org_id,
        key_id=key.id,
        scopes=list(key.scopes),
        plan=org.plan,
        expires_at=key.expires_at,
    )


def api_key_public(key: ApiKey) -> ApiKeyPublic:
    return project(ApiKeyPublic, key)
