"""The `svc.vault.*` subjects: each runs its service call in a transaction of its own; a worker's release or
profile use is authorized first, before a database connection is taken."""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Ack, ById
from browserfleet_contracts.profiles import (
    ProfileAcquireRequest,
    ProfileLease,
    ProfileNameRequest,
    ProfileSaveReply,
    ProfileSaveRequest,
)
from browserfleet_contracts.vault import (
    CheckNamesReply,
    CheckNamesRequest,
    NameRequest,
    ReleaseReply,
    ReleaseRequest,
    SsoClientSecretReply,
    SsoClientSecretRequest,
)
from browserfleet_core import dbhealth
from browserfleet_core.db import utcnow
from browserfleet_core.messaging import rpc_router
from faststream.nats import NatsRouter

from . import profile_leases, service
from .runtime import VaultRuntime


def build_router(rt: VaultRuntime) -> NatsRouter:
    # FastStream handles one message at a time per subscriber unless told otherwise; each handler holds at
    # most one pooled connection, so the pool size bounds how many may run at once.
    router = rpc_router(max_workers=rt.settings.db_pool_size)

    router.serve(
        endpoints.Vault.PUT_CREDENTIAL,
        lambda body: rt.db.run(service.put_credential, rt.keyring, body.actor, body.credential),
    )
    router.serve(
        endpoints.Vault.LIST_CREDENTIALS, lambda body: rt.db.run(service.list_credentials, body.actor)
    )

    @router.handle(endpoints.Vault.DELETE_CREDENTIAL)
    async def delete_credential(body: NameRequest) -> Ack:
        await rt.db.run(service.delete_credential, body.actor, body.name)
        return Ack()

    router.serve(
        endpoints.Vault.UPDATE_CREDENTIAL,
        lambda body: rt.db.run(service.update_credential, rt.keyring, body.actor, body.id, body.credential),
    )

    @router.handle(endpoints.Vault.DELETE_CREDENTIAL_BY_ID)
    async def delete_credential_by_id(body: ById) -> Ack:
        await rt.db.run(service.delete_credential_by_id, body.actor, body.id)
        return Ack()

    router.serve(endpoints.Vault.DB_HEALTH, lambda body: dbhealth.db_health(rt.db))

    @router.handle(endpoints.Vault.CHECK_NAMES)
    async def check_names(body: CheckNamesRequest) -> CheckNamesReply:
        return CheckNamesReply(missing=await rt.db.run(service.check_names, body.actor, body.names))

    @router.handle(endpoints.Vault.RELEASE)
    async def release(body: ReleaseRequest) -> ReleaseReply:
        grant = await service.authorize_release(rt.rpc, rt.workers, body)
        return await rt.db.run(service.release, rt.keyring, grant)

    @router.handle(endpoints.Vault.SSO_CLIENT_SECRET)
    async def sso_client_secret(body: SsoClientSecretRequest) -> SsoClientSecretReply:
        value = await rt.db.run(service.release_sso_secret, rt.keyring, body.org_id, body.name)
        return SsoClientSecretReply(value=value)

    @router.handle(endpoints.Vault.PROFILE_ACQUIRE)
    async def profile_acquire(body: ProfileAcquireRequest) -> ProfileLease:
        grant = await profile_leases.authorize_profile_use(rt.rpc, rt.workers, body)
        return await rt.db.run(profile_leases.acquire_profile, rt.keyring, grant, utcnow())

    @router.handle(endpoints.Vault.PROFILE_SAVE)
    async def profile_save(body: ProfileSaveRequest) -> ProfileSaveReply:
        grant = await profile_leases.authorize_profile_use(rt.rpc, rt.workers, body)
        return await rt.db.run(
            profile_leases.save_profile, rt.keyring, grant, body.lease_token, body.sealed_state, utcnow()
        )

    router.serve(
        endpoints.Vault.LIST_PROFILES,
        lambda body: rt.db.run(profile_leases.list_profiles, body.actor, utcnow()),
    )

    @router.handle(endpoints.Vault.DELETE_PROFILE)
    async def delete_profile(body: ProfileNameRequest) -> Ack:
        await rt.db.run(profile_leases.delete_profile, body.actor, body.name, utcnow())
        return Ack()

    return router
