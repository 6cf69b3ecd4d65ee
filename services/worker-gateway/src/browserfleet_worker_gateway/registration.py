"""Who a worker is: registration with an invite (a new identity: id, `sk_worker_…` key, pool, tags, device
info, X25519 public key), the new public key a known worker sends at every start (rotation), the key's
authentication, and deregistration when a worker leaves for good."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta

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
REMOVED_REGISTRATION = "this invite's worker was removed"
# How long after a registration the same registration (same invite, same public key) is answered again, as
# long as the worker's key was never used: the worker repeats it when the reply did not come in time
# (presence._patiently, backing off to 15 s), and its reply may have been lost although it committed.
REPEAT_WINDOW = timedelta(minutes=15)
_KEY_LABEL = b"browserfleet worker key\x00"


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


def _derived_key(invite_code: str, nonce: str) -> str:
    """A registration's worker key: HMAC of its nonce under the invite code. Only the one who holds the code
    can make it again (the database has the code's and the key's SHA-256 and the nonce, nothing more)."""
    mac = hmac.new(invite_code.encode(), _KEY_LABEL + nonce.encode(), hashlib.sha256).digest()
    return WORKER_KEY_PREFIX + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def _reply(worker: Worker, key: str) -> RegisterReply:
    return RegisterReply(
        worker_id=worker.id,
        worker_key=key,
        api_key=key,
        pool=worker.pool,
        pool_name=worker.pool_name,
        org_id=worker.org_id,
        tags=list(worker.tags),
    )


async def _repeated(
    session: AsyncSession, invite: WorkerInvite, body: RegisterRequest, now: datetime
) -> RegisterReply | None:
    """The first answer again when this is a registration the invite already made with the same public key
    (a process's key pair never outlives it, so only the process that registered sends it) within
    REPEAT_WINDOW and the worker's key was never used: its reply was lost. Anything else is a new
    registration, which a used one-time invite refuses. The invite's row is locked, so a repetition waits
    for the first registration's commit and then finds its worker."""
    if body.public_key is None or invite.revoked_at is not None:
        return None
    worker = await repository.unseen_registration(session, invite.id, body.public_key, now - REPEAT_WINDOW)
    if worker is None or worker.key_nonce is None:
        return None
    if worker.revoked_at is not None:
        raise Unauthorized(REMOVED_REGISTRATION, code="invalid_invite", field="invite_code")
    key = _derived_key(body.invite_code, worker.key_nonce)
    if hash_token(key) != worker.key_hash:  # pragma: no cover - the code is the invite's: cannot differ
        return None
    log.info("worker %s registered again with invite %s (the first reply was lost)", worker.id, invite.id)
    return _reply(worker, key)


async def register(
    session: AsyncSession, body: RegisterRequest, now: datetime | None = None
) -> RegisterReply:
    """A new worker for each registration, also for each replica using one pool invite; the same
    registration repeated (same invite, same public key) gets the same worker and key (`_repeated`). A
    refused code creates nothing and uses nothing up (the use is counted in this transaction)."""
    now = now or utcnow()
    digest = hash_token(body.invite_code)
    known = await repository.invite_by_hash(session, digest, lock=True)
    if known is not None and (again := await _repeated(session, known, body, now)) is not None:
        return again
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
    # with a public key, the key can be made again for a repetition of this registration (`_repeated`)
    nonce = secrets.token_urlsafe(32) if body.public_key is not None else None
    key = _derived_key(body.invite_code, nonce) if nonce is not None else new_token(WORKER_KEY_PREFIX)
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
        key_nonce=nonce,
        created_at=now,
    )
    await repository.add(session, worker)
    log.info("worker %s (%s) registered in pool %s with invite %s", worker.id, name, worker.pool, invite.id)
    return _reply(worker, key)


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
    worker.key_nonce = None  # its key works: no registration of it is repeated any more
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
