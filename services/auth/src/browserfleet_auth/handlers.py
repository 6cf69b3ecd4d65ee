"""The `svc.auth.*` request/reply subjects. Thin: parse, open a transaction, call the service, reply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import (
    ApiKeyCreated,
    ApiKeyPrincipal,
    ApiKeyPublic,
    ApiKeyRevoked,
    AuditEntry,
    AuthenticateApiKeyRequest,
    BootstrapReply,
    BootstrapRequest,
    CreateApiKeyRequest,
    CreateOrganizationRequest,
    CreateUserRequest,
    Jwks,
    ListAuditRequest,
    LoginCommand,
    MePublic,
    MeRequest,
    OrganizationCreated,
    OrganizationDetail,
    OrgPolicy,
    RefreshRequest,
    TokenPair,
    UpdateOrganizationRequest,
    UpdateOrgPolicyRequest,
    UpdateUserRequest,
    UserCreated,
    UserDetail,
    WorkerOrgPolicyRequest,
)
from browserfleet_contracts.common import Ack, ById, OrgScoped, Page
from browserfleet_core.db import Database
from browserfleet_core.errors import Unavailable
from browserfleet_core.messaging import rpc_router
from browserfleet_core.workerkeys import WorkerKeys
from faststream.nats import NatsBroker, NatsRouter

from .service import COMMIT_THEN_RAISE, AuthService, RefreshTokenReused

# Login spends most of its time in argon2 on a worker thread; a few in flight keep both cores busy
# without letting a burst exhaust the database pool.
MAX_IN_FLIGHT = 8


@dataclass
class AuthDeps:
    service: AuthService
    db: Database | None = None
    broker: NatsBroker | None = None
    worker_keys: WorkerKeys | None = None

    @property
    def workers(self) -> WorkerKeys:
        if self.worker_keys is None:
            raise Unavailable("auth cannot verify worker keys here", code="service_unavailable")
        return self.worker_keys

    @property
    def database(self) -> Database:
        if self.db is None:  # a broker built only to describe itself (AsyncAPI) has no database
            raise Unavailable("auth has no database configured", code="service_unavailable")
        return self.db


def create_router(deps: AuthDeps) -> NatsRouter:
    router = rpc_router()
    q = subjects.Auth.QUEUE

    @router.subscriber(subjects.Auth.LOGIN, queue=q, max_workers=MAX_IN_FLIGHT, title="auth.login")
    async def login(body: LoginCommand) -> TokenPair:
        """Email and password to an access token (Ed25519 JWT) and a rotating refresh token.

        Repeated failures per account or client address slow down and then lock (429 `login_throttled`)."""
        failed: Exception | None = None
        async with deps.database.transaction() as session:
            try:
                return await deps.service.login(session, body.email, body.password, client_ip=body.client_ip)
            except COMMIT_THEN_RAISE as exc:
                failed = exc  # the counters and the audit row must be committed before answering
        raise failed

    @router.subscriber(subjects.Auth.REFRESH, queue=q, max_workers=MAX_IN_FLIGHT, title="auth.refresh")
    async def refresh(body: RefreshRequest) -> TokenPair:
        """Rotate a refresh token; presenting a spent one revokes its whole family (401)."""
        reused: RefreshTokenReused | None = None
        async with deps.database.transaction() as session:
            try:
                return await deps.service.refresh(session, body.refresh_token)
            except RefreshTokenReused as exc:
                reused = exc  # answered after the commit, so the family's revocation sticks
        raise reused

    @router.subscriber(subjects.Auth.LOGOUT, queue=q, max_workers=MAX_IN_FLIGHT, title="auth.logout")
    async def logout(body: RefreshRequest) -> Ack:
        """Revoke the refresh token's family. Idempotent."""
        async with deps.database.transaction() as session:
            await deps.service.logout(session, body.refresh_token)
        return Ack()

    @router.subscriber(subjects.Auth.ME, queue=q, max_workers=MAX_IN_FLIGHT, title="auth.me")
    async def me(body: MeRequest) -> MePublic:
        """The authenticated user and their organization."""
        async with deps.database.transaction() as session:
            return await deps.service.me(session, user_id=body.user_id, org_id=body.org_id)

    @router.subscriber(subjects.Auth.JWKS, queue=q, max_workers=MAX_IN_FLIGHT, title="auth.jwks")
    async def jwks(body: dict[str, Any]) -> Jwks:
        """Public keys verifying access tokens, including recently retired ones."""
        async with deps.database.transaction() as session:
            return await deps.service.jwks(session)

    @router.subscriber(subjects.Auth.BOOTSTRAP, queue=q, title="auth.bootstrap")
    async def bootstrap(body: BootstrapRequest) -> BootstrapReply:
        """First start: create the first organization and its admin; the password is in this reply only."""
        async with deps.database.transaction() as session:
            return await deps.service.bootstrap(session, org_name=body.org_name, admin_email=body.admin_email)

    @router.subscriber(subjects.Auth.CREATE_API_KEY, queue=q, title="auth.create_api_key")
    async def create_api_key(body: CreateApiKeyRequest) -> ApiKeyCreated:
        """A new `sk_api_…` key for the actor's org; the key is in this reply only (stored as SHA-256)."""
        async with deps.database.transaction() as session:
            return await deps.service.create_api_key(session, body.actor, body.key)

    @router.subscriber(subjects.Auth.LIST_API_KEYS, queue=q, title="auth.list_api_keys")
    async def list_api_keys(body: OrgScoped) -> list[ApiKeyPublic]:
        """The org's API keys, without the keys themselves."""
        async with deps.database.transaction() as session:
            return await deps.service.list_api_keys(session, body.actor)

    @router.subscriber(subjects.Auth.REVOKE_API_KEY, queue=q, title="auth.revoke_api_key")
    async def revoke_api_key(body: ById) -> ApiKeyPublic:
        """Revoke a key (idempotent); every gateway is told on `auth.api_key.revoked` after the commit."""
        async with deps.database.transaction() as session:
            key = await deps.service.revoke_api_key(session, body.actor, body.id)
        if deps.broker is not None:
            notice = ApiKeyRevoked(key_id=key.id, org_id=key.org_id)
            await deps.broker.publish(notice, subjects.Auth.API_KEY_REVOKED)
        return key

    @router.subscriber(
        subjects.Auth.AUTHENTICATE_API_KEY,
        queue=q,
        max_workers=MAX_IN_FLIGHT,
        title="auth.authenticate_api_key",
    )
    async def authenticate_api_key(body: AuthenticateApiKeyRequest) -> ApiKeyPrincipal:
        """The org, key id, scopes and plan of a valid key; 401 for an unknown, revoked or expired one."""
        async with deps.database.transaction() as session:
            return await deps.service.authenticate_api_key(session, body.key)

    @router.subscriber(subjects.Auth.LIST_ORGANIZATIONS, queue=q, title="auth.list_organizations")
    async def list_organizations(body: OrgScoped) -> list[OrganizationDetail]:
        """Every organization (platform operator only)."""
        async with deps.database.transaction() as session:
            return await deps.service.list_organizations(session, body.actor)

    @router.subscriber(subjects.Auth.CREATE_ORGANIZATION, queue=q, title="auth.create_organization")
    async def create_organization(body: CreateOrganizationRequest) -> OrganizationCreated:
        """A new organization (platform operator only); slugs are unique after NFKC and case folding."""
        async with deps.database.transaction() as session:
            return await deps.service.create_org(session, body.actor, body.organization)

    @router.subscriber(subjects.Auth.UPDATE_ORGANIZATION, queue=q, title="auth.update_organization")
    async def update_organization(body: UpdateOrganizationRequest) -> OrganizationDetail:
        """Rename, re-slug, change plan or settings (platform operator only; 404 for anyone else)."""
        async with deps.database.transaction() as session:
            return await deps.service.update_org(session, body)

    @router.subscriber(subjects.Auth.DELETE_ORGANIZATION, queue=q, title="auth.delete_organization")
    async def delete_organization(body: ById) -> Ack:
        """Remove an organization with its users and keys; emits `organization.deleted` on EVENTS."""
        async with deps.database.transaction() as session:
            await deps.service.delete_org(session, body.actor, body.id)
        return Ack()

    @router.subscriber(subjects.Auth.LIST_USERS, queue=q, title="auth.list_users")
    async def list_users(body: OrgScoped) -> list[UserDetail]:
        """The org's users (admins)."""
        async with deps.database.transaction() as session:
            return await deps.service.list_users(session, body.actor)

    @router.subscriber(
        subjects.Auth.CREATE_USER, queue=q, max_workers=MAX_IN_FLIGHT, title="auth.create_user"
    )
    async def create_user(body: CreateUserRequest) -> UserCreated:
        """Create or invite (no password: a one-time password is in this reply only) a user of the org."""
        async with deps.database.transaction() as session:
            return await deps.service.invite_user(session, body.actor, body.user)

    @router.subscriber(subjects.Auth.UPDATE_USER, queue=q, title="auth.update_user")
    async def update_user(body: UpdateUserRequest) -> UserDetail:
        """Change a user's name or role, deactivate (ends their sessions) or reactivate them."""
        async with deps.database.transaction() as session:
            return await deps.service.update_user(session, body)

    @router.subscriber(subjects.Auth.LIST_AUDIT, queue=q, title="auth.list_audit")
    async def list_audit(body: ListAuditRequest) -> Page[AuditEntry]:
        """The org's audit log, newest first, filtered by action and time, keyset-paginated."""
        async with deps.database.transaction() as session:
            return await deps.service.list_audit(session, body)

    @router.subscriber(subjects.Auth.GET_ORG_POLICY, queue=q, title="auth.get_org_policy")
    async def get_org_policy(body: OrgScoped) -> OrgPolicy:
        """The actor's organization's policy (any member may read it)."""
        async with deps.database.transaction() as session:
            return await deps.service.get_org_policy(session, body.actor)

    @router.subscriber(subjects.Auth.UPDATE_ORG_POLICY, queue=q, title="auth.update_org_policy")
    async def update_org_policy(body: UpdateOrgPolicyRequest) -> OrgPolicy:
        """Replace the actor's organization's policy (admins); audit-logged."""
        async with deps.database.transaction() as session:
            return await deps.service.update_org_policy(session, body.actor, body.policy)

    @router.subscriber(subjects.Auth.ORG_POLICY, queue=q, max_workers=MAX_IN_FLIGHT, title="auth.org_policy")
    async def org_policy(body: WorkerOrgPolicyRequest) -> OrgPolicy:
        """The policy a worker enforces for a task of `org_id`; the worker key is verified with worker-gateway
        (cached briefly). 401 for an unknown key, 404 for an org the worker may not serve."""
        worker = await deps.workers.verify(body.worker_key)  # before the transaction: no connection held
        async with deps.database.transaction() as session:
            return await deps.service.org_policy_for_worker(session, worker, body.org_id)

    return router
