"""The `svc.auth.*` request/reply subjects. Thin: parse, open a transaction, call the service, reply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import (
    BootstrapReply,
    BootstrapRequest,
    Jwks,
    LoginCommand,
    MePublic,
    MeRequest,
    RefreshRequest,
    TokenPair,
)
from browserfleet_contracts.common import Ack
from browserfleet_core.db import Database
from browserfleet_core.errors import Unavailable
from browserfleet_core.messaging import rpc_router
from faststream.nats import NatsRouter

from .service import AuthService, RefreshTokenReused

# Login spends most of its time in argon2 on a worker thread; a few in flight keep both cores busy
# without letting a burst exhaust the database pool.
MAX_IN_FLIGHT = 8


@dataclass
class AuthDeps:
    service: AuthService
    db: Database | None = None

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
        """Email and password to an access token (Ed25519 JWT) and a rotating refresh token."""
        async with deps.database.transaction() as session:
            return await deps.service.login(session, body.email, body.password)

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

    return router
