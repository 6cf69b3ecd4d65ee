"""Sign-in: login, token refresh, logout, the caller, and the public signing keys."""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import Jwks, LoginCommand, LoginRequest, MePublic, MeRequest, TokenPair
from browserfleet_contracts.common import Empty
from browserfleet_contracts.mfa import LoginAnswer, LoginReply, SignedIn, SignedInUser
from fastapi import APIRouter, Depends, Request, Response

from ..deps import CurrentPrincipal, RpcDep, StateDep, client_ip, public
from ..errors import API_ERRORS
from ..replies import relay_route
from ..runtime import GatewayState

router = APIRouter(tags=["auth"], responses=API_ERRORS)


@router.post(
    "/auth/login",
    response_model=LoginAnswer,
    summary="Exchange email and password for tokens and the user (`user {id, name, organization}`), or for "
    "an MFA challenge when a second factor applies",
    dependencies=[Depends(public("the password is the credential", login=True))],
)
async def login(body: LoginRequest, request: Request, state: StateDep) -> LoginAnswer:
    assert state.rpc is not None
    command = LoginCommand(**body.model_dump(), client_ip=client_ip(request))
    reply: LoginReply = await state.rpc.call(endpoints.Auth.LOGIN, command)
    if not isinstance(reply.root, TokenPair):
        return LoginAnswer(reply.root)  # the challenge, as auth made it: no user until the second factor
    return LoginAnswer(SignedIn(**reply.root.model_dump(), user=await _signed_in_user(state, reply.root)))


async def _signed_in_user(state: GatewayState, tokens: TokenPair) -> SignedInUser:
    """Who the fresh access token names, in the seed's shape: read from the token auth just signed (checked
    like any other) and asked of auth."""
    assert state.verifier is not None and state.rpc is not None
    claims = await state.verifier.verify(tokens.access_token)
    me: MePublic = await state.rpc.call(
        endpoints.Auth.ME, MeRequest(user_id=str(claims["sub"]), org_id=str(claims["org"]))
    )
    return SignedInUser(
        id=me.user.id,
        name=me.user.name,
        email=me.user.email,
        role=me.role,
        organization=me.organization.name,
        organization_id=me.organization.id,
        organization_slug=me.organization.slug,
    )


# the refresh token is the credential: the access token is short-lived and may already have expired
relay_route(
    router,
    "POST",
    "/auth/refresh",
    endpoints.Auth.REFRESH,
    public("the refresh token is the credential"),
    name="refresh",
    summary="Rotate a refresh token",
)
relay_route(
    router,
    "POST",
    "/auth/logout",
    endpoints.Auth.LOGOUT,
    public("the refresh token is the credential"),
    name="logout",
    summary="Revoke a refresh token and its family",
)


@router.get("/auth/me", response_model=MePublic, summary="The caller, their role and organization")
async def me(principal: CurrentPrincipal, rpc: RpcDep) -> MePublic:
    assert principal.user_id is not None
    return await rpc.call(endpoints.Auth.ME, MeRequest(user_id=principal.user_id, org_id=principal.org_id))


# One handler at two paths; its name is part of both operation ids in the OpenAPI document.
async def _jwks(rpc: RpcDep, response: Response) -> Jwks:
    response.headers["Cache-Control"] = "public, max-age=300"
    return await rpc.call(endpoints.Auth.JWKS, Empty())


for _path in ("/.well-known/jwks.json", "/auth/jwks"):
    router.add_api_route(
        _path,
        _jwks,
        methods=["GET"],
        response_model=Jwks,
        summary="Public signing keys",
        dependencies=[Depends(public("public keys"))],
    )
