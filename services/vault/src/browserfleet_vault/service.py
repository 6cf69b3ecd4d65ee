"""Vault logic: write-only credentials, and their release to the worker running a task that names them.

Values go in through `put_credential` and come out only through `release`; nothing here logs one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import ClaimInfo, ClaimInfoRequest
from browserfleet_contracts.vault import CredentialCreate, CredentialPublic
from browserfleet_contracts.workers import WorkerAuthRequest, WorkerIdentity
from browserfleet_core.db import utcnow
from browserfleet_core.errors import Forbidden, NotFound
from browserfleet_core.messaging import RpcClient
from sqlmodel.ext.asyncio.session import AsyncSession

from . import crypto, repository
from .crypto import Keyring
from .models import Credential, DataKey

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


def authorize(identity: WorkerIdentity, claim: ClaimInfo, names: list[str]) -> ReleaseGrant:
    """The release rule: the task is running, claimed by this worker, and names every secret asked for."""
    if claim.status != "running":
        raise Forbidden(f"task {claim.task_id} is {claim.status}, not running", code="release_denied")
    if claim.worker_id != identity.worker_id:
        raise Forbidden(f"task {claim.task_id} is not claimed by this worker", code="release_denied")
    if identity.org_id is not None and identity.org_id != claim.org_id:
        raise Forbidden(f"task {claim.task_id} belongs to another organization", code="release_denied")
    allowed = set(claim.secret_names)
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


async def authorize_release(rpc: RpcClient, task_id: str, worker_key: str, names: list[str]) -> ReleaseGrant:
    """Asks worker-gateway who the key belongs to and the scheduler who holds the task.

    Runs before any transaction is opened, so no connection is held across the two round trips.
    """
    identity: WorkerIdentity = await rpc.call(
        subjects.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=worker_key), WorkerIdentity
    )
    claim: ClaimInfo = await rpc.call(
        subjects.Scheduler.CLAIM_INFO, ClaimInfoRequest(task_id=task_id), ClaimInfo
    )
    return authorize(identity, claim, names)


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
