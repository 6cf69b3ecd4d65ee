"""Request dependencies: the RPC client and the authenticated principal with role guards."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from browserfleet_contracts.auth import API_KEY_PREFIX, API_KEY_SCOPES, ISSUED_CLAIM, MFA_AT_CLAIM
from browserfleet_contracts.common import Actor, Role
from browserfleet_contracts.workers import WORKER_KEY_PREFIX
from browserfleet_core.errors import Forbidden, Unauthorized, Unavailable
from browserfleet_core.messaging import RpcClient
from fastapi import Depends, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import HTTPConnection

from . import audittrail
from .clientaddr import client_address
from .runtime import GatewayState


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (verified access token) or an API key. `actor` is what travels to the
    services; for a key its role is the one the route's rule grants to the key's scope."""

    actor: Actor
    claims: dict[str, Any]
    kind: Literal["user", "api_key"] = "user"
    scopes: tuple[str, ...] = ()
    plan: str | None = None
    # a second factor applies to this user (enrolled, or the org requires it), and when the token's sign-in
    # last checked one (epoch seconds): what a sensitive route's `recent_mfa` rule reads
    mfa_applies: bool = False
    mfa_at: int | None = None

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


def client_ip(conn: HTTPConnection) -> str | None:
    """The client's address: the peer's, or behind a trusted proxy the one it forwarded (`clientaddr`)."""
    peer = conn.client.host if conn.client else None
    state = getattr(conn.app.state, "gateway", None)
    trusted = state.settings.trusted_proxies if isinstance(state, GatewayState) else ()
    if not trusted:
        return peer
    return client_address(peer, conn.headers.getlist("x-forwarded-for"), trusted)


async def authenticate(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from `Authorization: Bearer <access token | sk_api_…>`. No role or scope check here:
    that is the route's `access()` rule."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token", code="missing_token")
    return await principal_for(state, credentials.credentials, client_ip(request))


async def principal_for(state: GatewayState, token: str, ip: str | None) -> Principal:
    """Who a bearer credential (an access token or an `sk_api_` key) stands for, over HTTP or a WebSocket;
    raises Unauthorized."""
    if token.startswith(API_KEY_PREFIX):
        assert state.api_keys is not None and state.rpc is not None
        key = await state.api_keys.authenticate(state.rpc, token)
        actor = Actor(
            org_id=key.org_id,
            api_key_id=key.key_id,
            role="viewer",
            client_ip=ip,
            plan=key.plan,
        )
        return Principal(
            actor=actor,
            claims={"org": key.org_id, "key": key.key_id},
            kind="api_key",
            scopes=tuple(key.scopes),
            plan=key.plan,
        )
    assert state.verifier is not None and state.users is not None and state.rpc is not None
    claims = await state.verifier.verify(token)
    role = claims.get("role")
    if role not in _ROLES:
        raise Unauthorized("token carries no valid role", code="invalid_token")
    org_id, user_id = str(claims["org"]), str(claims["sub"])
    # the signature says who signed in; the live state says whether that still counts, and as what
    live = await state.users.get(state.rpc, org_id, user_id)
    if not live.active:
        raise Unauthorized("user not found or inactive", code="invalid_principal")
    issued = claims.get(ISSUED_CLAIM, claims.get("iat"))
    if not isinstance(issued, int | float) or issued < live.valid_after:
        raise Unauthorized("token revoked: sign in again", code="token_revoked")
    # a demotion holds at once; a promotion with the next token (a token never grants more than it says)
    effective = _ROLES[min(_ROLES.index(role), _ROLES.index(live.role))]
    plan = claims.get("plan")
    actor = Actor(
        org_id=org_id,
        user_id=user_id,
        role=effective,
        client_ip=ip,
        plan=plan if isinstance(plan, str) else None,
    )
    mfa_at = claims.get(MFA_AT_CLAIM)
    return Principal(
        actor=actor,
        claims=claims,
        plan=actor.plan,
        mfa_applies=live.mfa,
        mfa_at=int(mfa_at) if isinstance(mfa_at, int | float) else None,
    )


async def _rate_limit(state: GatewayState, principal: Principal) -> dict[str, str]:
    """Counts the call against the principal's bucket (TooManyRequests past it): the RateLimit-* headers."""
    if state.limiter is None:
        return {}
    if principal.kind == "api_key":
        plans = state.settings.rate_limit_plans
        rate = plans.get(principal.plan or "", state.settings.api_key_rate_per_second)
        quota = await state.limiter.hit(
            f"key:{principal.actor.api_key_id}", rate=rate, burst=max(1, round(rate * 2))
        )
    else:
        quota = await state.limiter.hit(f"user:{principal.org_id}:{principal.user_id}")
    return quota.headers() if quota is not None else {}


@dataclass(frozen=True)
class AccessRule:
    """Who may call a route: users whose role is at least `min_role`, and API keys holding one of `scopes`
    (none: keys are refused). `public` routes take no credential (login, health, JWKS, ...)."""

    min_role: Role | None
    scopes: tuple[str, ...] = ()
    public: bool = False
    note: str = ""
    # a sensitive action: a user to whom MFA applies must have passed it recently (MFA_RECENT_SECONDS)
    recent_mfa: bool = False
    # changes only the caller's own sign-in (their second factor): open to every role, viewers included
    self_service: bool = False
    # a worker's route: its own `sk_worker_…` key, no user or API key (worker-gateway checks the key)
    worker: bool = False


def admit(rule: AccessRule, principal: Principal) -> Principal:
    """`principal` as `rule` lets it act (a key acts with the rule's `min_role` for this call only), or
    Forbidden. Routes get this from `access()`; a WebSocket, which takes no dependencies, calls it itself."""
    needed = _ROLES.index(rule.min_role or "viewer")
    if principal.kind == "api_key":
        if not rule.scopes or not set(rule.scopes) & set(principal.scopes):
            raise Forbidden(
                "this API key lacks the scope for this route"
                if rule.scopes
                else "API keys cannot call this route",
                code="insufficient_scope",
            )
        actor = principal.actor.model_copy(update={"role": _ROLES[needed]})
        return Principal(
            actor=actor,
            claims=principal.claims,
            kind="api_key",
            scopes=principal.scopes,
            plan=principal.plan,
        )
    if _ROLES.index(principal.role) < needed:
        raise Forbidden(f"this needs the {rule.min_role} role", code="insufficient_role")
    return principal


def require_recent_mfa(state: GatewayState, principal: Principal) -> None:
    """403 `mfa_step_up_required` unless MFA does not apply to the caller or they passed it recently."""
    if principal.kind != "user" or not principal.mfa_applies:
        return
    window = state.settings.mfa_recent_seconds
    if principal.mfa_at is None or time.time() - principal.mfa_at > window:
        raise Forbidden(
            "this action needs a recent second factor: POST /auth/mfa/step-up with a code, then retry with "
            "the new access token",
            code="mfa_step_up_required",
        )


def access(
    min_role: Role = "viewer",
    *,
    scope: str | None = None,
    note: str = "",
    recent_mfa: bool = False,
    self_service: bool = False,
) -> Callable[..., Awaitable[Principal]]:
    """A route's access declaration and its enforcement, as one dependency: `principal: Annotated[Principal,
    Depends(access("user", scope="tasks:write"))]`. Roles are ordered viewer < user < admin, and every
    mutation needs at least `user`, so a viewer can read but never change anything. A key holding `scope`
    acts with the rule's `min_role` for this call only."""
    if scope is not None and scope not in API_KEY_SCOPES:
        raise ValueError(f"unknown API key scope {scope!r}")
    rule = AccessRule(
        min_role=min_role,
        scopes=(scope,) if scope else (),
        note=note,
        recent_mfa=recent_mfa,
        self_service=self_service,
    )

    async def guard(
        request: Request,
        principal: Annotated[Principal, Depends(authenticate)],
        state: StateDep,
        response: Response,
    ) -> Principal:
        admitted, quota = await enforce(request, state, rule, principal)
        response.headers.update(quota)
        return admitted

    guard.access_rule = rule  # type: ignore[attr-defined]
    return guard


async def enforce(
    conn: HTTPConnection, state: GatewayState, rule: AccessRule, principal: Principal
) -> tuple[Principal, dict[str, str]]:
    """Everything a route's `access()` rule checks once the caller is known, in its order: the principal
    admitted (and, for a change, naming its audit entry) and the RateLimit-* headers to answer with. The
    dependency runs it, and so does a hot route served without dependency solving (`hotreads`)."""
    audittrail.note(conn, state.rpc, principal)  # a refusal below is an audit entry of theirs
    admitted = admit(rule, principal)
    quota = await _rate_limit(state, admitted)
    if rule.recent_mfa:
        require_recent_mfa(state, admitted)
    return await audittrail.begin(conn, state.rpc, admitted), quota  # a change's entry before the change


def bearer_token(authorization: str | None) -> str:
    """The credential of an `Authorization: Bearer …` header as `authenticate` reads it (FastAPI's
    HTTPBearer, then our checks), or Unauthorized: for a route served without dependency solving."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token", code="missing_token")
    return credentials


def public(note: str, *, login: bool = False) -> Callable[..., Awaitable[None]]:
    """Declares a route callable without credentials. `login=True` adds the tighter per-address limit."""
    rule = AccessRule(min_role=None, public=True, note=note)

    async def declared(request: Request) -> None:
        if not login:
            return
        state = getattr(request.app.state, "gateway", None)
        if isinstance(state, GatewayState) and state.login_limiter is not None:
            await state.login_limiter.hit(f"login:{client_ip(request) or '?'}")

    declared.access_rule = rule  # type: ignore[attr-defined]
    return declared


def worker_key(note: str) -> Callable[..., Awaitable[str]]:
    """Declares a route a worker calls with its own key (`Authorization: Bearer sk_worker_…`) and returns the
    key. Worker-gateway checks it (401 for an unknown or removed worker) and holds it to the worker id in the
    path (another worker's id is a 404); a user's token or an API key is a 401 here."""
    rule = AccessRule(min_role=None, worker=True, note=note)

    async def declared(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        if credentials is None or not credentials.credentials.startswith(WORKER_KEY_PREFIX):
            raise Unauthorized(
                "this route takes a worker key (Bearer sk_worker_…)", code="worker_key_required"
            )
        return credentials.credentials

    declared.access_rule = rule  # type: ignore[attr-defined]
    return declared


# Any role, users only (no API keys); routes that accept API keys declare `access(min_role, scope=...)`.
CurrentPrincipal = Annotated[Principal, Depends(access("viewer"))]
# Org admins, users only: API keys, users, the audit log and the org's policy.
OrgAdmin = Annotated[Principal, Depends(access("admin"))]
# Org admins acting on the org's security (API keys, roles, policies, SSO, MFA): a recent second factor too,
# when one applies to them
SensitiveAdmin = Annotated[Principal, Depends(access("admin", recent_mfa=True))]
# Tasks: viewers and `tasks:read` keys read; users and `tasks:write` keys submit and cancel.
TasksRead = Annotated[Principal, Depends(access("viewer", scope="tasks:read"))]
TasksWrite = Annotated[Principal, Depends(access("user", scope="tasks:write"))]
# the id in a path: ours are UUIDs, but any id up to 64 characters reaches the service (which says 404)
ID_MAX_LENGTH = 64
IdPath = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH)]


def access_rules(call: Any) -> AccessRule | None:
    rule = getattr(call, "access_rule", None)
    return rule if isinstance(rule, AccessRule) else None
