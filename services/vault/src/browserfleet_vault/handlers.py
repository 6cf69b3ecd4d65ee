"""The `svc.vault.*` subjects. Thin: parse, open a transaction, call the service, reply."""

from __future__ import annotations

from typing import TYPE_CHECKING

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Ack, OrgScoped
from browserfleet_contracts.profiles import (
    ListProfilesRequest,
    ProfileAcquireRequest,
    ProfileLease,
    ProfileNameRequest,
    ProfilePublic,
    ProfileSaveReply,
    ProfileSaveRequest,
)
from browserfleet_contracts.vault import (
    CheckNamesReply,
    CheckNamesRequest,
    CredentialPublic,
    NameRequest,
    PutCredentialRequest,
    ReleaseReply,
    ReleaseRequest,
)
from browserfleet_core.db import utcnow
from browserfleet_core.messaging import rpc_router
from faststream.nats import NatsRouter

from . import service

if TYPE_CHECKING:
    from .app import VaultContext


def build_router(ctx: VaultContext) -> NatsRouter:
    router = rpc_router()
    queue = subjects.Vault.QUEUE
    # FastStream handles one message at a time per subscriber unless told otherwise; each handler holds at
    # most one pooled connection, so the pool size bounds how many may run at once.
    in_flight = ctx.settings.db_pool_size

    @router.subscriber(
        subjects.Vault.PUT_CREDENTIAL, queue=queue, max_workers=in_flight, title="vault.put_credential"
    )
    async def put_credential(body: PutCredentialRequest) -> CredentialPublic:
        async with ctx.db.transaction() as session:
            return await service.put_credential(session, ctx.keyring, body.actor, body.credential)

    @router.subscriber(
        subjects.Vault.LIST_CREDENTIALS, queue=queue, max_workers=in_flight, title="vault.list_credentials"
    )
    async def list_credentials(body: OrgScoped) -> list[CredentialPublic]:
        async with ctx.db.transaction() as session:
            return await service.list_credentials(session, body.actor)

    @router.subscriber(
        subjects.Vault.DELETE_CREDENTIAL, queue=queue, max_workers=in_flight, title="vault.delete_credential"
    )
    async def delete_credential(body: NameRequest) -> Ack:
        async with ctx.db.transaction() as session:
            await service.delete_credential(session, body.actor, body.name)
        return Ack()

    @router.subscriber(
        subjects.Vault.CHECK_NAMES, queue=queue, max_workers=in_flight, title="vault.check_names"
    )
    async def check_names(body: CheckNamesRequest) -> CheckNamesReply:
        async with ctx.db.transaction() as session:
            return CheckNamesReply(missing=await service.check_names(session, body.actor, body.names))

    @router.subscriber(subjects.Vault.RELEASE, queue=queue, max_workers=in_flight, title="vault.release")
    async def release(body: ReleaseRequest) -> ReleaseReply:
        grant = await service.authorize_release(
            ctx.rpc, ctx.workers, body.task_id, body.worker_key, body.names
        )
        async with ctx.db.transaction() as session:
            return ReleaseReply(values=await service.release(session, ctx.keyring, grant))

    @router.subscriber(
        subjects.Vault.PROFILE_ACQUIRE, queue=queue, max_workers=in_flight, title="vault.profile_acquire"
    )
    async def profile_acquire(body: ProfileAcquireRequest) -> ProfileLease:
        grant = await service.authorize_profile_use(
            ctx.rpc, ctx.workers, body.task_id, body.worker_key, body.profile
        )
        async with ctx.db.transaction() as session:
            return await service.acquire_profile(session, ctx.keyring, grant, utcnow())

    @router.subscriber(
        subjects.Vault.PROFILE_SAVE, queue=queue, max_workers=in_flight, title="vault.profile_save"
    )
    async def profile_save(body: ProfileSaveRequest) -> ProfileSaveReply:
        grant = await service.authorize_profile_use(
            ctx.rpc, ctx.workers, body.task_id, body.worker_key, body.profile
        )
        async with ctx.db.transaction() as session:
            return await service.save_profile(
                session, ctx.keyring, grant, body.lease_token, body.state, utcnow()
            )

    @router.subscriber(
        subjects.Vault.LIST_PROFILES, queue=queue, max_workers=in_flight, title="vault.list_profiles"
    )
    async def list_profiles(body: ListProfilesRequest) -> list[ProfilePublic]:
        async with ctx.db.transaction() as session:
            return await service.list_profiles(session, body.actor, utcnow())

    @router.subscriber(
        subjects.Vault.DELETE_PROFILE, queue=queue, max_workers=in_flight, title="vault.delete_profile"
    )
    async def delete_profile(body: ProfileNameRequest) -> Ack:
        async with ctx.db.transaction() as session:
            await service.delete_profile(session, body.actor, body.name, utcnow())
        return Ack()

    return router
