"""Vault logic: write-only credentials, and their release to the worker running a task that names them.

Values go in through `put_credential` and come out only through `release`; nothing here logs one.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import OrgPolicy, WorkerOrgPolicyRequest
from browserfleet_contracts.common import Actor
from browserfleet_contracts.profiles import (
    MAX_PROFILE_STATE_BYTES,
    ProfileLease,
    ProfilePublic,
    ProfileSaveReply,
)
from browserfleet_contracts.tasks import ClaimInfo, ClaimInfoRequest, GetTaskRequest, TaskPublic
from browserfleet_contracts.vault import CredentialCreate, CredentialPublic
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.db import utcnow
from browserfleet_core.errors import Conflict, Forbidden, Invalid, NotFound
from browserfleet_core.messaging import RpcClient
from browserfleet_core.workerkeys import WorkerKeys
from sqlmodel.ext.asyncio.session import AsyncSession

from . import crypto, repository
from .crypto import Keyring
from .models import Credential, DataKey, Profile

log = logging.getLogger(__name__)

WRITER_ROLES = frozenset({"admin", "user"})


def _public(credential: Credential, key_version: int) -> CredentialPublic:
    return CredentialPublic(
        id=credential.id,
        name=credential.name,
        type=credential.type,
        description=credential.description,
        key_version=key_version,
        created_at=credential.created_at,
        updated_at=credential.updated_at,
    )


async def current_data_key(session: AsyncSession, keyring: Keyring, org_id: str) -> tuple[DataKey, bytes]:
    """The org's data key under the current master key, created on first use."""
    row = await repository.get_data_key(session, org_id, keyring.current_version)
    if row is None:
        wrapped, version = keyring.wrap(org_id, crypto.new_data_key())
        await repository.insert_data_key_if_absent(session, org_id, wrapped, version)
        row = await repository.get_data_key(session, org_id, version)
        assert row is not None
    return row, keyring.unwrap(org_id, row.wrapped_key, row.master_key_version)


async def put_credential(
    session: AsyncSession, keyring: Keyring, actor: Actor, body: CredentialCreate
) -> CredentialPublic:
    if actor.role not in WRITER_ROLES:
        raise Forbidden("viewers cannot write credentials", code="insufficient_role")
    data_key, key = await current_data_key(session, keyring, actor.org_id)
    nonce, ciphertext = crypto.encrypt_value(key, actor.org_id, body.name, body.value)
    credential = await repository.upsert_credential(
        session,
        org_id=actor.org_id,
        name=body.name,
        type_=body.type,
        description=body.description,
        ciphertext=ciphertext,
        nonce=nonce,
        data_key_id=data_key.id,
    )
    log.info("credential %s stored for org %s", body.name, actor.org_id)
    return _public(credential, data_key.master_key_version)


async def list_credentials(session: AsyncSession, actor: Actor) -> list[CredentialPublic]:
    return [_public(c, v) for c, v in await repository.list_credentials(session, actor.org_id)]


async def delete_credential(session: AsyncSession, actor: Actor, name: str) -> None:
    if actor.role not in WRITER_ROLES:
        raise Forbidden("viewers cannot delete credentials", code="insufficient_role")
    if not await repository.delete_credential(session, actor.org_id, name):
        raise NotFound(f"credential {name} not found", field="name")
    log.info("credential %s deleted for org %s", name, actor.org_id)


async def check_names(session: AsyncSession, actor: Actor, names: list[str]) -> list[str]:
    wanted = list(dict.fromkeys(names))
    found = await repository.existing_names(session, actor.org_id, wanted)
    return [n for n in wanted if n not in found]


@dataclass(frozen=True)
class ReleaseGrant:
    task_id: str
    org_id: str
    worker_id: str
    names: list[str]


def authorize(
    identity: WorkerIdentity, claim: ClaimInfo, names: list[str], policy_names: Iterable[str] = ()
) -> ReleaseGrant:
    """The release rule: the task is running, claimed by this worker, and every secret asked for is named
    by the task's steps or by its organization's policy (`policy_names`: the org proxy's credentials, which
    only an org admin can set; a task cannot add to them)."""
    if claim.status != "running":
        raise Forbidden(f"task {claim.task_id} is {claim.status}, not running", code="release_denied")
    if claim.worker_id != identity.worker_id:
        raise Forbidden(f"task {claim.task_id} is not claimed by this worker", code="release_denied")
    if identity.org_id is not None and identity.org_id != claim.org_id:
        raise Forbidden(f"task {claim.task_id} belongs to another organization", code="release_denied")
    allowed = set(claim.secret_names) | set(policy_names)
    unnamed = [n for n in dict.fromkeys(names) if n not in allowed]
    if unnamed:
        raise Forbidden(
            f"task {claim.task_id} does not name secret(s): {', '.join(unnamed)}",
            code="release_denied",
            field="names",
        )
    return ReleaseGrant(
        task_id=claim.task_id,
        org_id=claim.org_id,
        worker_id=identity.worker_id,
        names=list(dict.fromkeys(names)),
    )


async def authorize_release(
    rpc: RpcClient, workers: WorkerKeys, task_id: str, worker_key: str, names: list[str]
) -> ReleaseGrant:
    """Asks worker-gateway who the key belongs to (through `workers`' short cache: an unknown key is its
    401) and the scheduler who holds the task (never cached: the claim is what changes).

    Runs before any transaction is opened, so no connection is held across the two round trips.
    """
    identity = await workers.verify(worker_key)
    claim: ClaimInfo = await rpc.call(
        subjects.Scheduler.CLAIM_INFO, ClaimInfoRequest(task_id=task_id), ClaimInfo
    )
    policy_names: set[str] = set()
    if set(names) - set(claim.secret_names):
        # names the task's steps do not: allowed only if the org's policy (its proxy) references them. Asked
        # only now, after the claim was checked, with the worker's own key (auth verifies it again).
        authorize(identity, claim, [])
        policy: OrgPolicy = await rpc.call(
            subjects.Auth.ORG_POLICY,
            WorkerOrgPolicyRequest(org_id=claim.org_id, worker_key=worker_key),
            OrgPolicy,
        )
        policy_names = policy.secret_names()
    return authorize(identity, claim, names, policy_names)


async def release(session: AsyncSession, keyring: Keyring, grant: ReleaseGrant) -> dict[str, str]:
    credentials = {c.name: c for c in await repository.get_credentials(session, grant.org_id, grant.names)}
    missing = [n for n in grant.names if n not in credentials]
    if missing:
        raise NotFound(f"credential(s) not found: {', '.join(missing)}", field="names")
    data_keys = await repository.get_data_keys(session, list({c.data_key_id for c in credentials.values()}))
    unwrapped: dict[str, bytes] = {}
    values: dict[str, str] = {}
    for name in grant.names:
        credential = credentials[name]
        if credential.data_key_id not in unwrapped:
            dk = data_keys[credential.data_key_id]
            unwrapped[dk.id] = keyring.unwrap(dk.org_id, dk.wrapped_key, dk.master_key_version)
        values[name] = crypto.decrypt_value(
            unwrapped[credential.data_key_id], grant.org_id, name, credential.nonce, credential.ciphertext
        )
    await repository.add_releases(
        session,
        task_id=grant.task_id,
        worker_id=grant.worker_id,
        org_id=grant.org_id,
        names=grant.names,
        at=utcnow(),
    )
    log.info("released %d secret(s) for task %s to worker %s", len(values), grant.task_id, grant.worker_id)
    return values


# --- profiles ------------------------------------------------------------------------------------------
PROFILE_LEASE_GRACE_SECONDS = 120  # a lease outlives its task's timeout by this much, then anyone may take it


@dataclass(frozen=True)
class ProfileGrant:
    task_id: str
    org_id: str
    worker_id: str
    profile: str
    lease_seconds: float


def authorize_profile(
    identity: WorkerIdentity, claim: ClaimInfo, task: TaskPublic, profile: str
) -> ProfileGrant:
    """The release rule for secrets (running, claimed by this worker, same org), and the task names the profile."""
    authorize(identity, claim, [])
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
    )


async def authorize_profile_use(
    rpc: RpcClient, workers: WorkerKeys, task_id: str, worker_key: str, profile: str
) -> ProfileGrant:
    """Who the key is (worker-gateway, through `workers`), who holds the task (scheduler), and which
    profile the task names: the scheduler's claim info does not carry the spec, so the task is read in its
    org's scope."""
    identity = await workers.verify(worker_key)
    claim: ClaimInfo = await rpc.call(
        subjects.Scheduler.CLAIM_INFO, ClaimInfoRequest(task_id=task_id), ClaimInfo
    )
    authorize(identity, claim, [])  # refuse before reading the task for a worker that does not hold it
    task: TaskPublic = await rpc.call(
        subjects.Scheduler.GET_TASK,
        GetTaskRequest(actor=Actor(org_id=claim.org_id, role="viewer"), task_id=task_id),
        TaskPublic,
    )
    return authorize_profile(identity, claim, task, profile)


async def acquire_profile(
    session: AsyncSession, keyring: Keyring, grant: ProfileGrant, now: datetime
) -> ProfileLease:
    """Grants the lease (with the stored state) unless another task holds an unexpired one.

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
    log.info("profile %s of org %s leased to task %s", grant.profile, grant.org_id, grant.task_id)
    return ProfileLease(
        granted=True,
        profile=grant.profile,
        lease_token=row.lease_token,
        state=state,
        version=row.version,
        expires_at=row.lease_expires_at,
        held_by_task=grant.task_id,
    )


async def save_profile(
    session: AsyncSession,
    keyring: Keyring,
    grant: ProfileGrant,
    lease_token: str,
    state: dict[str, Any] | None,
    now: datetime,
) -> ProfileSaveReply:
    """Stores `state` (if given) and ends the lease; only the lease's holder may, so a task whose lease was
    taken over cannot overwrite what the newer holder will save."""
    row = await repository.lock_profile(session, grant.org_id, grant.profile)
    if row.lease_token is None or not secrets.compare_digest(row.lease_token, lease_token):
        raise Conflict(
            f"the lease on profile {grant.profile} is no longer held by this task; nothing saved",
            code="profile_lease_lost",
            field="lease_token",
        )
    saved = False
    if state is not None:
        data = json.dumps(state, separators=(",", ":")).encode()
        if len(data) > MAX_PROFILE_STATE_BYTES:
            raise Invalid(
                f"profile state is {len(data)} bytes; at most {MAX_PROFILE_STATE_BYTES} are stored",
                field="state",
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
    return ProfilePublic(
        name=row.name,
        version=row.version,
        size=max(len(row.ciphertext) - GCM_TAG_BYTES, 0) if row.ciphertext is not None else 0,
        in_use=held,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


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
