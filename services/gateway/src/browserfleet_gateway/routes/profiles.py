"""Browser profiles of the caller's organization: list them, delete one. The state (cookies, localStorage) never
leaves the vault through these routes; only the worker running a task that names a profile receives it.

A profile is deleted only while no task holds its lease (409 `profile_in_use` otherwise: the running task would
save it back after success). The vault scopes both by the caller's org, so another org's profile is a 404.
"""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.profiles import ListProfilesRequest, ProfileNameRequest, ProfilePublic
from fastapi import APIRouter, Depends, Path, Response

from ..deps import Principal, RpcDep, access
from ..errors import error_responses
from ..replies import no_content, no_content_route

_ERRORS = error_responses(401, 403, 404, 409, 422, 429, 503)
# Profiles hold signed-in sessions: API keys need the credentials scope, like credentials themselves.
ProfilesRead = Annotated[Principal, Depends(access("viewer", scope="credentials:write"))]
ProfilesAdmin = Annotated[Principal, Depends(access("admin", scope="credentials:write"))]
_NAME = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]

router = APIRouter(prefix="/api/v1/profiles", tags=["profiles"], responses=_ERRORS)


@router.get(
    "",
    response_model=list[ProfilePublic],
    summary="The organization's browser profiles: name, version, size, whether a task uses one now",
)
async def list_profiles(principal: ProfilesRead, rpc: RpcDep) -> list[ProfilePublic]:
    return await rpc.call(endpoints.Vault.LIST_PROFILES, ListProfilesRequest(actor=principal.actor))


@no_content_route(
    router,
    "/{name}",
    summary="Delete a profile (409 while a running task holds it); the next task naming it starts empty",
)
async def delete_profile(name: _NAME, principal: ProfilesAdmin, rpc: RpcDep) -> Response:
    return await no_content(
        rpc, endpoints.Vault.DELETE_PROFILE, ProfileNameRequest(actor=principal.actor, name=name)
    )
