"""Browser profiles in the vault: a lease per task (the same release rule as secrets, and the task must name
the profile), the stored state sealed to the worker with the lease (delivery.py), a save that only the
lease's holder may make, and the org's list and delete. Never a state in a log line or a list."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor
from browserfleet_contracts.profiles import (
    MAX_PROFILE_STATE_BYTES,
    ProfileAcquireRequest,
    ProfileLease,
    ProfilePublic,
    ProfileSaveReply,
    ProfileSaveRequest,
)
from browserfleet_contracts.sealed import SealedBox
from browserfleet_contracts.tasks import ClaimInfo, ClaimInfoRequest, GetTaskRequest, TaskPublic
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.db import AsyncSession
from browserfleet_core.errors import Conflict, Forbidden, Invalid, NotFound
from browserfleet_core.messaging import RpcClient
from browserfleet_core.projection import project
from browserfleet_core.workerkeys import WorkerKeys

from . import crypto, delivery, repository
from .crypto import Keyring
from .models import Profile
from .service import WorkerGrant, authorize, current_data_key, worker_identity

log = logging.getLogger(__name__)

PROFILE_LEASE_GRACE_SECONDS = 120  # a lease outlives its task's timeout by this much, then anyone may take it


@dataclass(frozen=True)
class ProfileGrant(WorkerGrant):
    profile: str
    lease_seconds: float


def authorize_profile(
    identity: WorkerIdentity, claim: ClaimInfo, task: TaskPublic, profile: str, attempt: int | None = None
) -> ProfileGrant:
    """The release rule for secrets (running, claimed by this worker, same org), and the task names the profile."""
    secrets_grant = authorize(identity, claim, [], attempt=attempt)
    if task.id != claim.task_id or task.spec.profile != profile:
        raise Forbidden(
            f"task {claim.task_id} does not name profile {profile}", code="release_denied", field="profile"
        )
    return ProfileGrant(
        task_id=claim.task_id,
        org_id=claim.org_id,
        worker_id=identity.worker_id,
        profile=profile,
        lease_seconds=task.timeout_seconds + PROFILE_LEASE_GRACE_SECONDS,
        attempt=secrets_grant.attempt,
        public_key=secrets_grant.public_key,
    )


async def authorize_profile_use(
    rpc: RpcClient, workers: WorkerKeys, req: ProfileAcquireRequest | ProfileSaveRequest
) -> ProfileGrant:
    """Who the key is (`worker_identity`: asked past the cache when the lease is to be sealed to it, on an
    acquire; a save's state comes back sealed to the lease's own key), who holds the task (scheduler), and
    which profile the task names: the scheduler's claim info does not carry the spec, so the task is read in
    its org's scope."""
    acquiring = isinstance(req, ProfileAcquireRequest)
    public_key = req.public_key if isinstance(req, ProfileAcquireRequest) else None
    identity = await worker_identity(workers, req.worker_key, public_key, sealing_to_it=acquiring)
    claim: ClaimInfo = await rpc.call(endpoints.Scheduler.CLAIM_INFO, ClaimInfoRequest(task_id=req.task_id))
    authorize(
        identity, claim, [], attempt=req.attempt
    )  # refuse before reading the task for a worker that does not hold it
    task: TaskPublic = await rpc.call(
        endpoints.Scheduler.GET_TASK,
        GetTaskRequest(actor=Actor(org_id=claim.org_id, role="viewer"), task_id=req.task_id),
    )
    return authorize_profile(identity, claim, task, req.profile, req.attempt)


async def acquire_profile(
    session: AsyncSession, keyring: Keyring, grant: ProfileGrant, now: datetime
) -> ProfileLease:
    """Grants the lease (with the stored state, sealed to the worker) unless another task holds an unexpired
    one.

    A later attempt of the same task takes the lease over: the earlier attempt was given up by the scheduler,
    and its save will then fail on the changed token.
    """
    row = await repository.lock_profile(session, grant.org_id, grant.profile)
    held = row.lease_token is not None and row.lease_expires_at is not None and row.lease_expires_at > now
    if held and row.lease_task_id != grant.task_id:
        return ProfileLease(
            granted=False,
            profile=grant.profile,
            version=row.version,
            expires_at=row.lease_expires_at,
            held_by_task=row.lease_task_id,
        )
    state: dict[str, Any] | None = None
    if row.ciphertext is not None and row.nonce is not None and row.data_key_id is not None:
        dk = (await repository.get_data_keys(session, [row.data_key_id]))[row.data_key_id]
        key = keyring.unwrap(dk.org_id, dk.wrapped_key, dk.master_key_version)
        state = json.loads(
            crypto.decrypt_profile(key, grant.org_id, grant.profile, row.nonce, row.ciphertext)
        )
    row.lease_task_id = grant.task_id
    row.lease_token = secrets.token_urlsafe(24)
    row.lease_expires_at = now + timedelta(seconds=grant.lease_seconds)
    await repository.save_profile(session, row)
    sealed = delivery.seal_lease(
        keyring,
        grant.public_key,
        grant.binding,
        org_id=grant.org_id,
        profile=grant.profile,
        lease_token=row.lease_token,
        state=state,
    )
    log.info("profile %s of org %s leased to task %s", grant.profile, grant.org_id, grant.task_id)
    return ProfileLease(
        granted=True,
        profile=grant.profile,
        lease_token=row.lease_token,
        sealed=sealed,
        version=row.version,
        expires_at=row.lease_expires_at,
        held_by_task=grant.task_id,
    )


async def save_profile(
    session: AsyncSession,
    keyring: Keyring,
    grant: ProfileGrant,
    lease_token: str,
    sealed_state: SealedBox | None,
    now: datetime,
) -> ProfileSaveReply:
    """Stores the state (if given, sealed to the lease's save key) and ends the lease; only the lease's
    holder may, so a task whose lease was taken over cannot overwrite what the newer holder will save."""
    row = await repository.lock_profile(session, grant.org_id, grant.profile)
    if row.lease_token is None or not secrets.compare_digest(row.lease_token, lease_token):
        raise Conflict(
            f"the lease on profile {grant.profile} is no longer held by this task; nothing saved",
            code="profile_lease_lost",
            field="lease_token",
        )
    saved = False
    if sealed_state is not None:
        state = delivery.open_saved_state(
            keyring,
            grant.binding,
            sealed_state,
            org_id=grant.org_id,
            profile=grant.profile,
            lease_token=row.lease_token,
        )
        data = json.dumps(state, separators=(",", ":")).encode()
        if len(data) > MAX_PROFILE_STATE_BYTES:
            raise Invalid(
                f"profile state is {len(data)} bytes; at most {MAX_PROFILE_STATE_BYTES} are stored",
                field="sealed_state",
            )
        data_key, key = await current_data_key(session, keyring, grant.org_id)
        row.nonce, row.ciphertext = crypto.encrypt_profile(key, grant.org_id, grant.profile, data)
        row.data_key_id = data_key.id
        row.version += 1
        row.updated_at = now
        saved = True
    row.lease_task_id = row.lease_token = None
    row.lease_expires_at = None
    await repository.save_profile(session, row)
    log.info(
        "profile %s of org %s %s by task %s",
        grant.profile,
        grant.org_id,
        f"saved (version {row.version})" if saved else "released",
        grant.task_id,
    )
    return ProfileSaveReply(saved=saved, version=row.version)


GCM_TAG_BYTES = 16


def _profile_public(row: Profile, now: datetime) -> ProfilePublic:
    held = row.lease_token is not None and row.lease_expires_at is not None and row.lease_expires_at > now
    size = max(len(row.ciphertext) - GCM_TAG_BYTES, 0) if row.ciphertext is not None else 0
    return project(ProfilePublic, row, size=size, in_use=held)


async def list_profiles(session: AsyncSession, actor: Actor, now: datetime) -> list[ProfilePublic]:
    """The caller's organization's profiles: names, versions, sizes; never a state."""
    return [_profile_public(row, now) for row in await repository.list_profiles(session, actor.org_id)]


async def delete_profile(session: AsyncSession, actor: Actor, name: str, now: datetime) -> None:
    """Admins delete a profile of their organization; another org's profile is NotFound. A profile whose lease
    a running task holds is a Conflict (the task would save it back): retry once the task has finished."""
    if actor.role != "admin":
        raise Forbidden("only admins delete profiles", code="insufficient_role")
    row = await repository.lock_existing_profile(session, actor.org_id, name)
    if row is None:
        raise NotFound(f"profile {name} not found", code="profile_not_found", field="name")
    if row.lease_token is not None and row.lease_expires_at is not None and row.lease_expires_at > now:
        raise Conflict(
            f"profile {name} is in use by task {row.lease_task_id}; delete it after that task has finished",
            code="profile_in_use",
            field="name",
        )
    await repository.delete_profile_row(session, row)
    log.info("profile %s of org %s deleted", name, actor.org_id)
