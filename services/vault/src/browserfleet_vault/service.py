"""Vault logic: write-only credentials, and their release to the worker running a task that names them.

Values go in through `put_credential` and come out only through `release`, sealed to the worker's registered
public key (delivery.py); nothing here logs one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import OrgPolicy, WorkerOrgPolicyRequest
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import ClaimInfo, ClaimInfoRequest
from browserfleet_contracts.vault import (
    SSO_SECRET_TYPE,
    CredentialCreate,
    CredentialPublic,
    CredentialUpdate,
    ReleaseReply,
    ReleaseRequest,
)
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core import sealing
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import Conflict, Forbidden, Invalid, NotFound
from browserfleet_core.messaging import RpcClient
from browserfleet_core.projection import project
from browserfleet_core.workerkeys import WorkerKeys

from . import crypto, delivery, repository
from .crypto import Keyring
from .models import Credential, DataKey

log = logging.getLogger(__name__)

WRITER_ROLES = frozenset({"admin", "user"})


def _public(credential: Credential, key_version: int) -> CredentialPublic:
    return project(CredentialPublic, credential, key_version=key_version)


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
    await _guard_sso_secret(session, actor, body.name, body.type)
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


async def _guard_sso_secret(session: AsyncSession, actor: Actor, name: str, new_type: str | None) -> None:
    """An identity provider's client secret is the org's sign-in: only an admin writes, replaces or removes
    one (a user could otherwise swap the secret and break, or redirect, everyone's SSO)."""
    if actor.role == "admin":
        return
    existing = await repository.get_credentials(session, actor.org_id, [name])
    if new_type == SSO_SECRET_TYPE or any(c.type == SSO_SECRET_TYPE for c in existing):
        raise Forbidden("only admins may write or delete an sso_secret credential", code="insufficient_role")


async def delete_credential(session: AsyncSession, actor: Actor, name: str) -> None:
    if actor.role not in WRITER_ROLES:
        raise Forbidden("viewers cannot delete credentials", code="insufficient_role")
    await _guard_sso_secret(session, actor, name, None)
    if not await repository.delete_credential(session, actor.org_id, name):
        raise NotFound(f"credential {name} not found", field="name")
    log.info("credential %s deleted for org %s", name, actor.org_id)


async def update_credential(
    session: AsyncSession, keyring: Keyring, actor: Actor, credential_id: str, body: CredentialUpdate
) -> CredentialPublic:
    """Change a credential found by id (the seed's `PUT /admin/credentials/{id}`); its name stays, being what
    tasks reference. A new value is sealed under the org's current data key."""
    if actor.role not in WRITER_ROLES:
        raise Forbidden("viewers cannot write credentials", code="insufficient_role")
    credential = await repository.lock_credential(session, actor.org_id, credential_id)
    if credential is None:
        raise NotFound("credential not found", field="id")
    if body.name is not None and body.name != credential.name:
        raise Invalid(
            f"name: a credential keeps its name ({credential.name}): tasks reference it by name; store a new "
            "one and delete this one to rename",
            field="name",
            code="rename_unsupported",
        )
    await _guard_sso_secret(session, actor, credential.name, body.type)
    if body.type is not None:
        credential.type = body.type
    if "description" in body.model_fields_set:
        credential.description = body.description
    if body.value is not None:
        data_key, key = await current_data_key(session, keyring, actor.org_id)
        credential.nonce, credential.ciphertext = crypto.encrypt_value(
            key, actor.org_id, credential.name, body.value
        )
        credential.data_key_id = data_key.id
    credential.updated_at = utcnow()
    await repository.save_credential(session, credential)
    data_keys = await repository.get_data_keys(session, [credential.data_key_id])
    log.info("credential %s updated for org %s", credential.name, actor.org_id)
    return _public(credential, data_keys[credential.data_key_id].master_key_version)


async def delete_credential_by_id(session: AsyncSession, actor: Actor, credential_id: str) -> None:
    if actor.role not in WRITER_ROLES:
        raise Forbidden("viewers cannot delete credentials", code="insufficient_role")
    credential = await repository.lock_credential(session, actor.org_id, credential_id)
    if credential is None:
        raise NotFound("credential not found", field="id")
    await delete_credential(session, actor, credential.name)


async def check_names(session: AsyncSession, actor: Actor, names: list[str]) -> list[str]:
    """The names a task (or the org's proxy) may not use: unknown ones, and SSO client secrets, which are
    never released to a worker (so a task cannot carry one to a page)."""
    wanted = list(dict.fromkeys(names))
    found = await repository.get_credentials(session, actor.org_id, wanted)
    usable = {c.name for c in found if c.type != SSO_SECRET_TYPE}
    return [n for n in wanted if n not in usable]


@dataclass(frozen=True)
class WorkerGrant:
    """What a worker may be given for the attempt of a task it holds: sealed to its key, bound to the attempt."""

    task_id: str
    org_id: str
    worker_id: str
    attempt: int
    public_key: str  # the worker's registered X25519 key: what is sealed to it

    @property
    def binding(self) -> bytes:
        return sealing.binding(self.task_id, self.attempt, self.worker_id)


@dataclass(frozen=True)
class ReleaseGrant(WorkerGrant):
    names: list[str]


def authorize(
    identity: WorkerIdentity,
    claim: ClaimInfo,
    names: list[str],
    policy_names: Iterable[str] = (),
    attempt: int | None = None,
) -> ReleaseGrant:
    """The release rule: the task is running, claimed by this worker (in `attempt`, when it says), the
    worker has a public key to seal to, and every secret asked for is named by the task's steps or by its
    organization's policy (`policy_names`: the org proxy's credentials, which only an org admin can set; a
    task cannot add to them)."""
    if claim.status != "running":
        raise Forbidden(f"task {claim.task_id} is {claim.status}, not running", code="release_denied")
    if claim.worker_id != identity.worker_id:
        raise Forbidden(f"task {claim.task_id} is not claimed by this worker", code="release_denied")
    if attempt is not None and attempt != claim.attempt:
        raise Forbidden(
            f"task {claim.task_id} runs attempt {claim.attempt}, not {attempt}",
            code="release_denied",
            field="attempt",
        )
    if not identity.public_key:
        # never a value in clear: a worker that registered no key gets nothing it could read
        raise Forbidden(
            f"worker {identity.worker_id} has no registered public key, and secrets are only released "
            "sealed to one: restart the worker (it registers a new key pair at every start)",
            code="public_key_missing",
        )
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
        attempt=claim.attempt,
        public_key=identity.public_key,
    )


async def worker_identity(
    workers: WorkerKeys, worker_key: str, public_key: str | None, *, sealing_to_it: bool = True
) -> WorkerIdentity:
    """Who the key is (worker-gateway; an unknown or removed key is its 401).

    Before sealing to the worker (a release, a lease) worker-gateway is asked every time, past `workers`'
    cache: a box goes only to the key registered at this moment, so a worker that re-registered (every start
    makes a new key pair) is sealed to its new key at once and its old key is refused, and a removed worker
    gets nothing even while the cache still holds it. That costs one lookup per release, next to a task's
    seconds. A call that seals nothing to the worker (a profile save) is served from the cache.

    A worker that says which public key it opens with, and is not registered with that key, gets a 409: a
    box sealed to a key that process does not hold would only fail on its side."""
    identity = await workers.verify(worker_key, fresh=sealing_to_it)
    if public_key is not None and identity.public_key != public_key:
        if not sealing_to_it:  # a cached identity may predate a restart: ask before refusing
            identity = await workers.verify(worker_key, fresh=True)
        if identity.public_key != public_key:
            raise Conflict(
                "public_key is not the key worker-gateway has registered for this worker (re-registered "
                "since with another?); restart the worker so it registers the key pair it holds",
                code="public_key_mismatch",
                field="public_key",
            )
    return identity


async def authorize_release(rpc: RpcClient, workers: WorkerKeys, req: ReleaseRequest) -> ReleaseGrant:
    """Asks worker-gateway who the key belongs to and which public key it has now (`worker_identity`), and
    the scheduler who holds the task (never cached: the claim is what changes).

    Runs before any transaction is opened, so no connection is held across the two round trips.
    """
    identity = await worker_identity(workers, req.worker_key, req.public_key)
    claim: ClaimInfo = await rpc.call(endpoints.Scheduler.CLAIM_INFO, ClaimInfoRequest(task_id=req.task_id))
    names, attempt = req.names, req.attempt
    policy_names: set[str] = set()
    if set(names) - set(claim.secret_names):
        # names the task's steps do not: allowed only if the org's policy (its proxy) references them. Asked
        # only now, after the claim was checked, with the worker's own key (auth verifies it again).
        authorize(identity, claim, [], attempt=attempt)
        policy: OrgPolicy = await rpc.call(
            endpoints.Auth.ORG_POLICY, WorkerOrgPolicyRequest(org_id=claim.org_id, worker_key=req.worker_key)
        )
        policy_names = policy.secret_names()
    return authorize(identity, claim, names, policy_names, attempt)


async def release(session: AsyncSession, keyring: Keyring, grant: ReleaseGrant) -> ReleaseReply:
    """The values the grant names, sealed to the worker; the release is recorded (audit) in the same
    transaction."""
    found = await repository.get_credentials(session, grant.org_id, grant.names)
    credentials = {c.name: c for c in found if c.type != SSO_SECRET_TYPE}  # never to a worker
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
    sealed = delivery.seal_release(grant.public_key, grant.binding, values)
    log.info("released %d secret(s) for task %s to worker %s", len(values), grant.task_id, grant.worker_id)
    values.clear()
    return ReleaseReply(sealed=sealed)


async def release_sso_secret(session: AsyncSession, keyring: Keyring, org_id: str, name: str) -> str:
    """An organization's IdP client secret, for auth (the only caller of `svc.vault.sso_client_secret`; on
    an authenticated bus only auth's identity may publish it). Any other type of credential is a 404: this
    subject cannot be used to read a task's secrets."""
    found = [
        c for c in await repository.get_credentials(session, org_id, [name]) if c.type == SSO_SECRET_TYPE
    ]
    if not found:
        raise NotFound(f"no sso_secret credential named {name}", field="name", code="credential_not_found")
    credential = found[0]
    dk = (await repository.get_data_keys(session, [credential.data_key_id]))[credential.data_key_id]
    key = keyring.unwrap(dk.org_id, dk.wrapped_key, dk.master_key_version)
    value = crypto.decrypt_value(key, org_id, name, credential.nonce, credential.ciphertext)
    log.info("released sso secret %s of org %s to auth", name, org_id)
    return value
