"""Browser profiles of the caller's organization: list them, delete one. The state (cookies, localStorage) never
leaves the vault through these routes; only the worker running a task that names a profile receives it.

A profile is deleted only while no task holds its lease (409 `profile_in_use` otherwise: the running task would
save it back after success). The vault scopes both by the caller's org, so another org's profile is a 404.
"""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from fastapi import APIRouter, Depends, Path
from starlette import status as http

from ..deps import Principal, access
from ..errors import error_responses
from ..replies import rpc_route

_ERRORS = error_responses(401, 403, 404, 409, 422, 429, 503)
# Profiles hold signed-in sessions: API keys need the credentials scope, like credentials themselves.
ProfilesRead = Annotated[Principal, Depends(access("viewer", scope="credentials:write"))]
ProfilesAdmin = Annotated[Principal, Depends(access("admin", scope="credentials:write"))]
_NAME = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]

router = APIRouter(prefix="/api/v1/profiles", tags=["profiles"], responses=_ERRORS)


rpc_route(
    router,
    "GET",
    "",
    endpoints.Vault.LIST_PROFILES,
    ProfilesRead,
    name="list_profiles",
    summary="The organization's browser profiles: name, version, size, whether a task uses one now",
)


rpc_route(
    router,
    "DELETE",
    "/{name}",
    endpoints.Vault.DELETE_PROFILE,
    ProfilesAdmin,
    path_param=_NAME,
    status_code=http.HTTP_204_NO_CONTENT,
    name="delete_profile",
    summary="Delete a profile (409 while a running task holds it); the next task naming it starts empty",
)
