"""What the auth handlers need at run time: the logic's configuration, the database, the outbox relay, the
broker (for the API-key and user-change broadcasts), the worker-key check, the rpc client (the vault holds
the SSO client secrets) and the OpenID Connect relying party."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import ApiKeyPublic, ApiKeyRevoked, UserChanged
from browserfleet_core.db import AsyncSession, Database
from browserfleet_core.errors import Unavailable
from browserfleet_core.messaging import RpcClient
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.workerkeys import WorkerKeys
from faststream.nats import NatsBroker

from .config import AuthConfig
from .oidc import Oidc
from .sessions import COMMIT_THEN_RAISE
from .users import user_state

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(eq=False)
class AuthRuntime:
    """`database`, `outbox_relay` and `rpc_client` are None in a broker built only to describe itself
    (AsyncAPI): `db`, `relay` and `rpc` then answer 503 instead."""

    config: AuthConfig
    _: KW_ONLY
    database: Database | None
    outbox_relay: OutboxRelay | None
    broker: NatsBroker
    worker_keys: WorkerKeys
    rpc_client: Callable[[], RpcClient] | None = None
    oidc: Oidc = field(default_factory=Oidc)

    @property
    def rpc(self) -> RpcClient:
        if self.rpc_client is None:
            raise Unavailable("auth has no rpc client", code="service_unavailable")
        return self.rpc_client()

    @property
    def db(self) -> Database:
        if self.database is None:
            raise Unavailable("auth has no database configured", code="service_unavailable")
        return self.database

    @property
    def relay(self) -> OutboxRelay:
        if self.outbox_relay is None:
            raise Unavailable("auth has no database configured", code="service_unavailable")
        return self.outbox_relay

    async def run_committing_failures(
        self,
        work: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`db.run`, except that a failure in `COMMIT_THEN_RAISE` (failed sign-in counters and their audit
        rows, a reused refresh token's family revocation) is committed before it is raised: rolled back,
        it would undo the very thing it reports."""
        failed: Exception | None = None
        async with self.db.transaction() as session:
            try:
                return await work(session, *args, **kwargs)
            except COMMIT_THEN_RAISE as exc:
                failed = exc
        assert failed is not None
        raise failed

    async def announce_revoked(self, key: ApiKeyPublic) -> None:
        """Every gateway drops the key from its cache at once; called after the revocation committed."""
        await self.broker.publish(ApiKeyRevoked(key_id=key.id, org_id=key.org_id), subjects.API_KEY_REVOKED)

    async def announce_user(self, org_id: str, user_id: str) -> None:
        """Every gateway replaces its cached state of the user at once (active, role, valid-after, MFA); read
        after the change committed, so the broadcast carries the committed truth."""
        state = await self.db.run(user_state, user_id, org_id)
        await self.broker.publish(UserChanged(org_id=org_id, state=state), subjects.USER_CHANGED)

    async def announce_org(self, org_id: str) -> None:
        """Every gateway forgets what it cached about the org's users (an org-wide setting changed)."""
        await self.broker.publish(UserChanged(org_id=org_id), subjects.USER_CHANGED)
