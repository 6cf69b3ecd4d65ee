"""Worker-gateway logic: invites, registration, heartbeats, authentication and presence."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.workers import (
    Heartbeat,
    InviteCreate,
    InvitePublic,
    RegisterReply,
    RegisterRequest,
    WorkerIdentity,
    WorkerPublic,
    WorkerState,
)
from browserfleet_core.db import utcnow
from browserfleet_core.errors import Forbidden, Unauthorized
from browserfleet_core.security import hash_token, new_token
from sqlmodel.ext.asyncio.session import AsyncSession

from . import repository
from .models import Worker, WorkerInvite

log = logging.getLogger(__name__)

INVITE_PREFIX = "inv_"
WORKER_KEY_PREFIX = "sk_worker_"
# one message for unknown, used and expired codes: the difference would only help someone guessing
INVALID_INVITE = "invite code is invalid, used or expired"
INVALID_KEY = "unknown or revoked worker key"


async def create_invite(session: AsyncSession, actor: Actor | None, body: InviteCreate) -> InvitePublic:
    """`actor` None is the platform operator path (embedded launcher): the invite serves every org."""
    if actor is not None and actor.role != "admin":
        raise Forbidden("only admins can invite workers", code="insufficient_role")
    code = new_token(INVITE_PREFIX)
    now = utcnow()
    invite = WorkerInvite(
        code_hash=hash_token(code),
        org_id=actor.org_id if actor else None,
        tags=sorted(set(body.tags)),
        expires_at=now + timedelta(seconds=body.ttl_seconds),
        created_by=(actor.user_id or actor.api_key_id) if actor else None,
        created_at=now,
    )
    await repository.add(session, invite)
    log.info("worker invite %s created for %s", invite.id, invite.org_id or "the platform")
    return InvitePublic(code=code, expires_at=invite.expires_at, tags=invite.tags)


async def register(session: AsyncSession, body: RegisterRequest) -> RegisterReply:
    now = utcnow()
    invite = await repository.consume_invite(session, hash_token(body.invite_code), now)
    if invite is None:
        raise Unauthorized(INVALID_INVITE, code="invalid_invite", field="invite_code")
    key = new_token(WORKER_KEY_PREFIX)
    worker = Worker(
        org_id=invite.org_id,
        name=body.name,
        # the invite's tags are the admin's; the worker may add what it knows about itself
        tags=sorted({*invite.tags, *body.tags}),
        key_hash=hash_token(key),
        pool=subjects.DEFAULT_POOL,
        version=body.version,
        created_at=now,
    )
    await repository.add(session, worker)
    log.info("worker %s (%s) registered with invite %s", worker.id, worker.name, invite.id)
    return RegisterReply(worker_id=worker.id, worker_key=key, pool=worker.pool)


async def heartbeat(session: AsyncSession, body: Heartbeat) -> None:
    worker_id = await repository.record_heartbeat(
        session,
        hash_token(body.worker_key),
        now=utcnow(),
        busy=body.busy,
        running_tasks=body.running_tasks,
        slots=body.slots,
    )
    if worker_id is None:
        raise Unauthorized(INVALID_KEY, code="invalid_worker_key", field="worker_key")


async def authenticate(session: AsyncSession, worker_key: str) -> WorkerIdentity:
    worker = await repository.active_worker_by_key(session, hash_token(worker_key))
    if worker is None:
        raise Unauthorized(INVALID_KEY, code="invalid_worker_key", field="worker_key")
    return WorkerIdentity(worker_id=worker.id, org_id=worker.org_id, name=worker.name, tags=list(worker.tags))


def worker_state(worker: Worker, now: datetime, offline_after_seconds: float) -> WorkerState:
    if worker.last_seen is None or now - worker.last_seen > timedelta(seconds=offline_after_seconds):
        return "offline"
    return "busy" if worker.running_tasks > 0 else "online"


async def list_workers(
    session: AsyncSession, actor: Actor, *, offline_after_seconds: float
) -> list[WorkerPublic]:
    now = utcnow()
    return [
        WorkerPublic(
            id=w.id,
            name=w.name,
            org_id=w.org_id,
            tags=list(w.tags),
            state=worker_state(w, now, offline_after_seconds),
            last_seen=w.last_seen,
            running_tasks=w.running_tasks,
            created_at=w.created_at,
        )
        for w in await repository.visible_workers(session, actor.org_id)
    ]
