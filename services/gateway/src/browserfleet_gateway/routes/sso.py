"""Single sign-on with an organization's OpenID provider: the browser starts at
`GET /auth/sso/{org_slug}/login`, signs in at the provider, comes back to `GET /auth/sso/callback`, and lands
on the dashboard with a one-time code in the URL fragment that `POST /auth/sso/exchange` turns into tokens
(or an MFA challenge). Tokens never travel in a URL. Admins set the provider at `/admin/sso`."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.sso import SsoCallbackRequest, SsoExchangeRequest, SsoStartRequest
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse
from starlette import status as http

from ..deps import OrgAdmin, RpcDep, SensitiveAdmin, StateDep, client_ip, public
from ..errors import API_ERRORS
from ..replies import relay_route, rpc_route

router = APIRouter(tags=["sso"], responses=API_ERRORS)
CALLBACK_PATH = "/auth/sso/callback"
_Param = Annotated[str | None, Query(max_length=4000)]


def callback_url(state: StateDep, request: Request) -> str:
    """The redirect URI registered at the provider: from PUBLIC_URL behind a proxy, else this request's."""
    base = state.settings.public_url or str(request.base_url)
    return base.rstrip("/") + CALLBACK_PATH


@router.get(
    "/auth/sso/{org_slug}/login",
    status_code=http.HTTP_302_FOUND,
    response_class=RedirectResponse,
    summary="Start a single sign-on at the organization's identity provider (a browser redirect)",
    dependencies=[Depends(public("starts a sign-in at the organization's identity provider", login=True))],
)
async def sso_login(
    org_slug: Annotated[str, Path(min_length=1, max_length=63)],
    request: Request,
    state: StateDep,
    rpc: RpcDep,
) -> RedirectResponse:
    start = SsoStartRequest(org_slug=org_slug, redirect_uri=callback_url(state, request))
    reply = await rpc.call(endpoints.Auth.SSO_START, start)
    return RedirectResponse(reply.authorization_url, status_code=http.HTTP_302_FOUND)


@router.get(
    CALLBACK_PATH,
    status_code=http.HTTP_303_SEE_OTHER,
    response_class=RedirectResponse,
    summary="Where the identity provider sends the browser back; redirects to the dashboard with a one-time code",
    dependencies=[Depends(public("the state and code from the identity provider are the credential"))],
)
async def sso_callback(
    request: Request,
    state: StateDep,
    rpc: RpcDep,
    code: _Param = None,
    sso_state: Annotated[str | None, Query(alias="state", max_length=200)] = None,
    error: _Param = None,
    error_description: _Param = None,
) -> RedirectResponse:
    callback = SsoCallbackRequest(
        state=sso_state,
        code=code,
        error=error[:200] if error else None,
        error_description=error_description[:1000] if error_description else None,
        client_ip=client_ip(request),
    )
    handoff = await rpc.call(endpoints.Auth.SSO_CALLBACK, callback)
    # in the fragment: a browser never sends it to a server, so no log or Referer carries it
    target = f"{state.settings.sso_redirect_path}#sso_code={handoff.code}"
    return RedirectResponse(target, status_code=http.HTTP_303_SEE_OTHER)


relay_route(
    router,
    "POST",
    "/auth/sso/exchange",
    endpoints.Auth.SSO_EXCHANGE,
    public("the one-time code is the credential", login=True),
    body=SsoExchangeRequest,
    name="sso_exchange",
    summary="Exchange the one-time code from a finished SSO sign-in for tokens (or an MFA challenge)",
)
rpc_route(
    router,
    "GET",
    "/admin/sso",
    endpoints.Auth.GET_SSO_SETTINGS,
    OrgAdmin,
    name="get_sso",
    summary="The organization's identity provider",
)
rpc_route(
    router,
    "PUT",
    "/admin/sso",
    endpoints.Auth.PUT_SSO_SETTINGS,
    SensitiveAdmin,
    body="settings",
    name="put_sso",
    summary="Set the organization's identity provider (issuer, client, owned domains, roles, SSO-only)",
)
rpc_route(
    router,
    "DELETE",
    "/admin/sso",
    endpoints.Auth.DELETE_SSO_SETTINGS,
    SensitiveAdmin,
    status_code=http.HTTP_204_NO_CONTENT,
    name="delete_sso",
    summary="Remove the organization's identity provider (password sign-in applies again)",
)
