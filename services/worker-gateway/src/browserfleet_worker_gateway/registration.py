"""Who a worker is: registration with an invite (a new identity: id, `sk_worker_…` key, pool, tags, device
info, X25519 public key), the new public key a known worker sends at every start (rotation), the key's
authentication, and deregistration when a worker leaves for good."""

from __future__ import annotations

import logging
from datetime import datetime

from browserfleet_contracts import subjects
from browserfleet_contracts.workers import (
    WORKER_KEY_PREFIX,
    DeregisterRequest,
    DeviceInfo,
    RegisterReply,
    RegisterRequest,
    RotateKeyRequest,
    WorkerIdentity,
)
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import NotFound, Unauthorized
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.projection import project
from browserfleet_core.security import hash_token, new_token

from . import events, invites, repository
from .models import Worker, WorkerInvite

log = logging.getLogger(__name__)

INVALID_KEY = "unknown worker key"
REVOKED_KEY = "this worker was removed: its key no longer works (register again with an invite)"


def _invite_refusal(invite: WorkerInvite | None, now: datetime) -> str:
    """Why a code does not register. Naming the reason helps whoever holds a real code (an expired one
    needs a new invite, a revoked one a word with the admin); an unknown code learns nothing from it."""
    if invite is None:
        return "unknown invite code"
    return {
        "revoked": "this invite was revoked",
        "expired": "this invite has expired",
        "used": "this invite was already used",
    }.get(invites.status_of(invite, now), "this invite cannot be used")


def identity_of(worker: Worker) -> WorkerIdentity:
    return project(WorkerIdentity, worker, worker_id=worker.id)


def _device(info: DeviceInfo | None) -> dict[str, str] | None:
    if info is None:
        return None
    return info.model_dump(exclude_none=True) or None


async def register(
    session: AsyncSession, body: RegisterRequest, now: datetime | None = None
) -> RegisterReply:
    """A new worker for each registration, also for each replica using one pool invite. A refused code
    creates nothing and uses nothing up (the use is counted in this transaction)."""
    now = now or utcnow()
    digest = hash_token(body.invite_code)
    invite = await repository.consume_invite(session, digest, now)
    if invite is None:
        reason = _invite_refusal(await repository.invite_by_hash(session, digest), now)
        raise Unauthorized(reason, code="invalid_invite", field="invite_code")
    device = body.device_info or DeviceInfo()
    # a one-time invite names its worker (the seed's flow); a pool's replicas are told apart by host name
    name = (
        body.name
        or (invite.name if not invite.multi_use else None)
        or device.hostname
        or invite.name
        or invite.pool
    )
    key = new_token(WORKER_KEY_PREFIX)
    worker = Worker(
        org_id=invite.org_id,
        name=name,
        # the invite's tags are the admin's; the worker may add what it knows about itself
        tags=sorted({*invite.tags, *body.tags}),
        key_hash=hash_token(key),
        pool=subjects.pool_key(invite.pool, invite.org_id),
        pool_name=invite.pool,
        invite_id=invite.id,
        version=body.version or device.version,
        device_info=_device(body.device_info),
        public_key=body.public_key,
        created_at=now,
    )
    await repository.add(session, worker)
    log.info("worker %s (%s) registered in pool %s with invite %s", worker.id, name, worker.pool, invite.id)
    return RegisterReply(
        worker_id=worker.id,
        worker_key=key,
        api_key=key,
        pool=worker.pool,
        pool_name=worker.pool_name,
        org_id=worker.org_id,
        tags=list(worker.tags),
    )


async def live_worker(session: AsyncSession, worker_key: str, *, lock: bool = False) -> Worker:
    """The key's worker, or 401 saying whether the key is unknown or its worker was removed."""
    worker = await repository.worker_by_key(session, hash_token(worker_key), lock=lock)
    if worker is None:
        raise Unauthorized(INVALID_KEY, code="invalid_worker_key", field="worker_key")
    if worker.revoked_at is not None:
        raise Unauthorized(REVOKED_KEY, code="worker_revoked", field="worker_key")
    return worker


async def own_worker(session: AsyncSession, worker_key: str, worker_id: str) -> Worker:
    """The key's worker, locked, when it is `worker_id`: another worker's id is a 404, as for no worker."""
    worker = await live_worker(session, worker_key, lock=True)
    if worker.id != worker_id:
        raise NotFound("worker not found", code="worker_not_found")
    return worker


async def authenticate(session: AsyncSession, worker_key: str) -> WorkerIdentity:
    return identity_of(await live_worker(session, worker_key))


async def rotate_key(session: AsyncSession, body: RotateKeyRequest) -> WorkerIdentity:
    """A worker's fresh X25519 public key (every start: a private key never outlives its process). A new run
    also starts undrained: a drain was a request to the process that received it."""
    if body.worker_id is None:
        worker = await live_worker(session, body.worker_key, lock=True)
    else:
        worker = await own_worker(session, body.worker_key, body.worker_id)
    worker.public_key = body.public_key
    if body.device_info is not None:
        worker.device_info = _device(body.device_info)
        worker.version = body.device_info.version or worker.version
    worker.drain_requested_at = None
    worker.reported_status = None
    worker.status_detail = None
    await repository.add(session, worker)
    log.info("worker %s sent a new public key", worker.id)
    return identity_of(worker)


async def deregister(
    session: AsyncSession, relay: OutboxRelay, req: DeregisterRequest, now: datetime | None = None
) -> Worker:
    """The worker leaves for good: its key stops working and it is no longer listed; worker.offline tells
    whoever watched it. Returns it, for the `workers.revoked` broadcast."""
    now = now or utcnow()
    worker = await own_worker(session, req.worker_key, req.worker_id)
    worker.revoked_at, worker.removed_reason = now, "deregistered"
    await events.go_offline(session, relay, worker, now, "deregistered")
    await repository.add(session, worker)
    log.info("worker %s (%s) deregistered", worker.id, worker.name)
    return worker
