"""Invites: one-time codes (a laptop joining) and pool invites (every replica of a Deployment registering an
identity of its own), per organization or for the platform; listed without their codes, revocable.
`ensure_configured` keeps the operator's PLATFORM_POOL_INVITE in the table."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Literal

from browserfleet_contracts.common import Actor, ById
from browserfleet_contracts.workers import MAX_INVITE_SECONDS, InviteCreate, InviteInfo, InvitePublic
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import Forbidden, Invalid
from browserfleet_core.lookup import found
from browserfleet_core.projection import project
from browserfleet_core.security import hash_token, new_token

from . import repository
from .models import WorkerInvite

log = logging.getLogger(__name__)

INVITE_PREFIX = "inv_"
MIN_TTL = timedelta(seconds=60)
# the operator's configured invite is renewed at every start of worker-gateway
CONFIGURED_TTL = timedelta(days=365)


def require_admin(actor: Actor | None) -> None:
    """`actor` None is the platform operator's path (the embedded launcher, the CLI)."""
    if actor is not None and actor.role != "admin":
        raise Forbidden("only admins manage workers", code="insufficient_role")


InviteStatus = Literal["active", "used", "expired", "revoked"]


def status_of(invite: WorkerInvite, now: datetime) -> InviteStatus:
    if invite.revoked_at is not None:
        return "revoked"
    if invite.expires_at <= now:
        return "expired"
    if (not invite.multi_use and invite.uses > 0) or (
        invite.max_uses is not None and invite.uses >= invite.max_uses
    ):
        return "used"
    return "active"


def info(invite: WorkerInvite, now: datetime | None = None) -> InviteInfo:
    return project(InviteInfo, invite, status=status_of(invite, now or utcnow()))


async def create_invite(
    session: AsyncSession, actor: Actor | None, body: InviteCreate, now: datetime | None = None
) -> InvitePublic:
    require_admin(actor)
    now = now or utcnow()
    expires_at = body.expires_at or now + timedelta(seconds=body.ttl_seconds)
    if not now + MIN_TTL <= expires_at <= now + timedelta(seconds=MAX_INVITE_SECONDS):
        raise Invalid("expires_at must be between a minute and a year from now", field="invite.expires_at")
    code = new_token(INVITE_PREFIX)
    invite = WorkerInvite(
        code_hash=hash_token(code),
        org_id=actor.org_id if actor else None,
        name=body.name,
        pool=body.pool,
        tags=body.all_tags(),
        multi_use=body.multi_use,
        max_uses=body.max_uses,
        expires_at=expires_at,
        created_by=(actor.user_id or actor.api_key_id) if actor else None,
        created_at=now,
    )
    await repository.add(session, invite)
    log.info(
        "worker %s %s created for pool %s of %s",
        "pool invite" if invite.multi_use else "invite",
        invite.id,
        invite.pool,
        invite.org_id or "the platform",
    )
    return InvitePublic(**info(invite, now).model_dump(), code=code, invite_code=code)


async def list_invites(session: AsyncSession, actor: Actor) -> list[InviteInfo]:
    require_admin(actor)
    now = utcnow()
    return [info(i, now) for i in await repository.org_invites(session, actor.org_id)]


async def revoke_invite(session: AsyncSession, req: ById) -> InviteInfo:
    """Idempotent. Workers that registered with it keep their identities (revoke them one by one)."""
    require_admin(req.actor)
    row = await repository.org_invite(session, req.actor.org_id, req.id)
    invite = found(row, "invite not found", code="invite_not_found")
    now = utcnow()
    if invite.revoked_at is None:
        invite.revoked_at = now
        await repository.add(session, invite)
        log.info("worker invite %s revoked", invite.id)
    return info(invite, now)


async def ensure_configured(
    session: AsyncSession, code: str | None, pool: str, now: datetime | None = None
) -> None:
    """The operator's platform pool invite (PLATFORM_POOL_INVITE) is the one active configured invite: a new
    code revokes the previous one, the same code is renewed for another year. A replica started without the
    setting changes nothing: it must not revoke what its configured peers keep (or another deployment on the
    same database, such as a test platform)."""
    if code is None:
        return
    now = now or utcnow()
    digest = hash_token(code)
    found = False
    for invite in await repository.configured_invites(session):
        if invite.code_hash == digest:
            found = True
            invite.revoked_at, invite.pool, invite.expires_at = None, pool, now + CONFIGURED_TTL
        elif invite.revoked_at is None:
            invite.revoked_at = now
            log.info("configured pool invite %s revoked: PLATFORM_POOL_INVITE changed", invite.id)
        await repository.add(session, invite)
    if found:
        return
    if await repository.invite_by_hash(session, digest) is not None:
        raise Invalid("PLATFORM_POOL_INVITE is already another invite's code", field="platform_pool_invite")
    invite = WorkerInvite(
        code_hash=digest,
        pool=pool,
        multi_use=True,
        configured=True,
        expires_at=now + CONFIGURED_TTL,
        created_at=now,
    )
    await repository.add(session, invite)
    log.info("configured pool invite %s for platform pool %s", invite.id, pool)
