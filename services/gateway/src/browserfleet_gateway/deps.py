"""Request dependencies: the RPC client and the authenticated principal with role guards."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import (
    API_KEY_PREFIX,
    API_KEY_SCOPES,
    ApiKeyPrincipal,
    ApiKeyRevoked,
    AuthenticateApiKeyRequest,
)
from browserfleet_contracts.common import Actor, Role
from browserfleet_core.errors import Forbidden, Unauthorized, Unavailable
from browserfleet_core.messaging import RpcClient
from browserfleet_core.security import JwksVerifier, hash_token
from fastapi import Depends, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from .ratelimit import RateLimiter
from .settings import GatewaySettings

log = logging.getLogger(__name__)


@dataclass
class GatewayState:
    """Everything a request needs, set up by the app's lifespan (nothing is connected before it runs)."""

    settings: GatewaySettings
    nc: NatsClient | None = None
    rpc: RpcClient | None = None
    verifier: JwksVerifier | None = None
    limiter: RateLimiter | None = None
    login_limiter: RateLimiter | None = None
    api_keys: ApiKeyCache | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (verified access token) or an API key. `actor` is what travels to the
    services; for a key its role is the one the route's rule grants to the key's scope."""

    actor: Actor
    claims: dict[str, Any]
    kind: Literal["user", "api_key"] = "user"
    scopes: tuple[str, ...] = ()
    plan: str | None = None

    @property
    def org_id(self) -> str:
        return self.actor.org_id

    @property
    def user_id(self) -> str | None:
        return self.actor.user_id

    @property
    def role(self) -> Role:
        return self.actor.role


async def get_state(request: Request) -> GatewayState:
    state = getattr(request.app.state, "gateway", None)
    if not isinstance(state, GatewayState) or state.rpc is None:
        raise Unavailable("gateway is starting", code="starting")
    return state


class ApiKeyCache:
    """Verified API keys, kept `ttl` seconds (monotonic clock) so a key costs auth one call per replica per
    `ttl`. A revocation reaches every replica at once on `auth.api_key.revoked` (core NATS, no queue group);
    the TTL bounds the damage of a missed broadcast, and a key's own expiry is checked on every request."""

    def __init__(
        self,
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._wall = wall
        self._entries: dict[str, tuple[ApiKeyPrincipal, float]] = {}

    async def authenticate(self, rpc: RpcClient, raw: str) -> ApiKeyPrincipal:
        digest = hash_token(raw)
        hit = self._entries.get(digest)
        now = self._clock()
        if hit is not None and hit[1] > now:
            principal = hit[0]
        else:
            principal = await rpc.call(
                subjects.Auth.AUTHENTICATE_API_KEY, AuthenticateApiKeyRequest(key=raw), ApiKeyPrincipal
            )
            if self.ttl > 0:
                if len(self._entries) > 10_000:
                    self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
                self._entries[digest] = (principal, now + self.ttl)
        if principal.expires_at is not None and principal.expires_at <= self._wall():
            self._entries.pop(digest, None)
            raise Unauthorized("invalid, revoked or expired API key", code="invalid_api_key")
        return principal

    def revoke(self, key_id: str) -> None:
        self._entries = {k: v for k, v in self._entries.items() if v[0].key_id != key_id}

    async def subscribe(self, nc: NatsClient) -> None:
        async def on_revoked(msg: Msg) -> None:
            try:
                notice = ApiKeyRevoked.model_validate_json(msg.data)
            except ValueError:
                log.warning("ignoring a malformed API key revocation")
                return
            self.revoke(notice.key_id)

        await nc.subscribe(subjects.Auth.API_KEY_REVOKED, cb=on_revoked)


StateDep = Annotated[GatewayState, Depends(get_state)]


async def get_rpc(state: StateDep) -> RpcClient:
    assert state.rpc is not None  # get_state guarantees it
    return state.rpc


RpcDep = Annotated[RpcClient, Depends(get_rpc)]

# auto_error=False: a missing header must be our 401 with the error body, not FastAPI's default answer.
_bearer = HTTPBearer(
    auto_error=False, description="an access token from POST /auth/login, or an API key `sk_api_…`"
)
_ROLES: tuple[Role, ...] = ("viewer", "user", "admin")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def authenticate(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from `Authorization: Bearer <access token | sk_api_…>`. No role or scope check here:
    that is the route's `access()` rule."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token", code="missing_token")
    token = credentials.credentials
    if token.startswith(API_KEY_PREFIX):
        assert state.api_keys is not None and state.rpc is not None
        key = await state.api_keys.authenticate(state.rpc, token)
        actor = Actor(
            org_id=key.org_id,
            api_key_id=key.key_id,
            role="viewer",
            client_ip=client_ip(request),
            plan=key.plan,
        )
        return Principal(
            actor=actor,
            claims={"org": key.org_id, "key": key.key_id},
            kind="api_key",
            scopes=tuple(key.scopes),
            plan=key.plan,
        )
    assert state.verifier is not None
    claims = await state.verifier.verify(token)
    role = claims.get("role")
    if role not in _ROLES:
        raise Unauthorized("token carries no valid role", code="invalid_token")
    plan = claims.get("plan")
    actor = Actor(
        org_id=str(claims["org"]),
        user_id=str(claims["sub"]),
        role=role,
        client_ip=client_ip(request),
        plan=plan if isinstance(plan, str) else None,
    )
    return Principal(actor=actor, claims=claims, plan=actor.plan)


def _rate_limit(state: GatewayState, principal: Principal, response: Response) -> None:
    if state.limiter is None:
        return
    if principal.kind == "api_key":
        plans = state.settings.rate_limit_plans
        rate = plans.get(principal.plan or "", state.settings.api_key_rate_per_second)
        quota = state.limiter.hit(
            f"key:{principal.actor.api_key_id}", rate=rate, burst=max(1, round(rate * 2))
        )
    else:
        quota = state.limiter.hit(f"user:{principal.org_id}:{principal.user_id}")
    if quota is not None:
        response.headers.update(quota.headers())


@dataclass(frozen=True)
class AccessRule:
    """Who may call a route: users whose role is at least `min_role`, and API keys holding one of `scopes`
    (none: keys are refused). `public` routes take no credential (login, health, JWKS, ...)."""

    min_role: Role | None
    scopes: tuple[str, ...] = ()
    public: bool = False
    note: str = ""

    def describe(self) -> str:
        if self.public:
            return f"public ({self.note})" if self.note else "public"
        keys = f"API keys with {' or '.join(self.scopes)}" if self.scopes else "no API keys"
        return f"role >= {self.min_role}; {keys}" + (f"; {self.note}" if self.note else "")


def access(
    min_role: Role = "viewer", *, scope: str | None = None, note: str = ""
) -> Callable[..., Awaitable[Principal]]:
    """A route's access declaration and its enforcement, as one dependency: `principal: Annotated[Principal,
    Depends(access("user", scope="tasks:write"))]`. Roles are ordered viewer < user < admin, and every
    mutation needs at least `user`, so a viewer can read but never change anything. A key holding `scope`
    acts with the rule's `min_role` for this call only."""
    if scope is not None and scope not in API_KEY_SCOPES:
        raise ValueError(f"unknown API key scope {scope!r}")
    needed = _ROLES.index(min_role)
    rule = AccessRule(min_role=min_role, scopes=(scope,) if scope else (), note=note)

    async def guard(
        principal: Annotated[Principal, Depends(authenticate)], state: StateDep, response: Response
    ) -> Principal:
        if principal.kind == "api_key":
            if not rule.scopes or not set(rule.scopes) & set(principal.scopes):
                raise Forbidden(
                    "this API key lacks the scope for this route"
                    if rule.scopes
                    else "API keys cannot call this route",
                    code="insufficient_scope",
                )
            _rate_limit(state, principal, response)
            actor = principal.actor.model_copy(update={"role": min_role})
            return Principal(
                actor=actor,
                claims=principal.claims,
                kind="api_key",
                scopes=principal.scopes,
                plan=principal.plan,
            )
        if _ROLES.index(principal.role) < needed:
            raise Forbidden(f"this needs the {min_role} role", code="insufficient_role")
        _rate_limit(state, principal, response)
        return principal

    guard.access_rule = rule  # type: ignore[attr-defined]
    return guard


def public(note: str, *, login: bool = False) -> Callable[..., Awaitable[None]]:
    """Declares a route callable without credentials. `login=True` adds the tighter per-address limit."""
    rule = AccessRule(min_role=None, public=True, note=note)

    async def declared(request: Request) -> None:
        if not login:
            return
        state = getattr(request.app.state, "gateway", None)
        if isinstance(state, GatewayState) and state.login_limiter is not None:
            state.login_limiter.hit(f"login:{client_ip(request) or '?'}")

    declared.access_rule = rule  # type: ignore[attr-defined]
    return declared


async def get_principal(principal: Annotated[Principal, Depends(access("viewer"))]) -> Principal:
    return principal


# Any role, users only (no API keys); `Writer` / `Admin` for user and admin. Routes that accept API keys
# declare `access(min_role, scope=...)` themselves.
CurrentPrincipal = Annotated[Principal, Depends(access("viewer"))]
# Tasks: viewers and `tasks:read` keys read; users and `tasks:write` keys submit and cancel.
TasksRead = Annotated[Principal, Depends(access("viewer", scope="tasks:read"))]
TasksWrite = Annotated[Principal, Depends(access("user", scope="tasks:write"))]
# the id in a path: ours are UUIDs, but any id up to 64 characters reaches the service (which says 404)
IdPath = Annotated[str, Path(min_length=1, max_length=64)]
Writer = Annotated[Principal, Depends(access("user"))]
Admin = Annotated[Principal, Depends(access("admin"))]


def require_role(minimum: Role) -> Callable[..., Awaitable[Principal]]:
    """Kept for callers of the first version: `access(minimum)` without API-key scopes."""
    return access(minimum)


def access_rules(call: Any) -> AccessRule | None:
    rule = getattr(call, "access_rule", None)
    return rule if isinstance(rule, AccessRule) else None
