"""Request dependencies: the RPC client and the authenticated principal with role guards."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from browserfleet_contracts.common import Actor, Role
from browserfleet_core.errors import Forbidden, Unauthorized, Unavailable
from browserfleet_core.messaging import RpcClient
from browserfleet_core.security import JwksVerifier
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from nats.aio.client import Client as NatsClient

from .ratelimit import RateLimiter
from .settings import GatewaySettings


@dataclass
class GatewayState:
    """Everything a request needs, set up by the app's lifespan (nothing is connected before it runs)."""

    settings: GatewaySettings
    nc: NatsClient | None = None
    rpc: RpcClient | None = None
    verifier: JwksVerifier | None = None
    limiter: RateLimiter | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Principal:
    """Who is calling, from a verified access token. `actor` is what travels to the services."""

    actor: Actor
    claims: dict[str, Any]

    @property
    def org_id(self) -> str:
        return self.actor.org_id

    @property
    def user_id(self) -> str | None:
        return self.actor.user_id

    @property
    def role(self) -> Role:
        return self.actor.role


def get_state(request: Request) -> GatewayState:
    state = getattr(request.app.state, "gateway", None)
    if not isinstance(state, GatewayState) or state.rpc is None:
        raise Unavailable("gateway is starting", code="starting")
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


def get_rpc(state: StateDep) -> RpcClient:
    assert state.rpc is not None  # get_state guarantees it
    return state.rpc


RpcDep = Annotated[RpcClient, Depends(get_rpc)]

# auto_error=False: a missing header must be our 401 with the error body, not FastAPI's default answer.
_bearer = HTTPBearer(auto_error=False, description="access token from POST /auth/login")
_ROLES: tuple[Role, ...] = ("viewer", "user", "admin")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def get_principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token", code="missing_token")
    assert state.verifier is not None
    claims = await state.verifier.verify(credentials.credentials)
    role = claims.get("role")
    if role not in _ROLES:
        raise Unauthorized("token carries no valid role", code="invalid_token")
    if state.limiter is not None:
        state.limiter.hit(f"{claims['org']}:{claims['sub']}")
    actor = Actor(
        org_id=str(claims["org"]), user_id=str(claims["sub"]), role=role, client_ip=client_ip(request)
    )
    return Principal(actor=actor, claims=claims)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_role(minimum: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """Roles are ordered viewer < user < admin; `require_role("user")` is what every mutation needs,
    so a viewer can read but never change anything."""
    needed = _ROLES.index(minimum)

    async def guard(principal: CurrentPrincipal) -> Principal:
        if _ROLES.index(principal.role) < needed:
            raise Forbidden(f"this needs the {minimum} role", code="insufficient_role")
        return principal

    return guard


Writer = Annotated[Principal, Depends(require_role("user"))]
Admin = Annotated[Principal, Depends(require_role("admin"))]
