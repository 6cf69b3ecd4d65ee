"""Organizations (platform operator). Admins of their own org reach auth, which answers only to a platform
operator: 403 for the list and create, 404 for an organization id, so ids reveal nothing."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from fastapi import APIRouter, Depends
from starlette import status as http

from ..deps import Principal, access
from ..errors import API_ERRORS
from ..replies import rpc_route

Operator = Annotated[Principal, Depends(access("admin", note="platform operator, checked by auth"))]

router = APIRouter(prefix="/organizations", tags=["organizations"], responses=API_ERRORS)


rpc_route(
    router,
    "GET",
    "",
    endpoints.Auth.LIST_ORGANIZATIONS,
    Operator,
    name="list_organizations",
    summary="All organizations",
)
rpc_route(
    router,
    "POST",
    "",
    endpoints.Auth.CREATE_ORGANIZATION,
    Operator,
    body="organization",
    status_code=http.HTTP_201_CREATED,
    name="create_organization",
    summary="Create an organization (and its first admin, whose password is in this answer only)",
)
rpc_route(
    router,
    "PUT",
    "/{org_id}",
    endpoints.Auth.UPDATE_ORGANIZATION,
    Operator,
    body="organization",
    name="update_organization",
    summary="Change an organization's name, slug, plan or settings",
)
rpc_route(
    router,
    "DELETE",
    "/{org_id}",
    endpoints.Auth.DELETE_ORGANIZATION,
    Operator,
    status_code=http.HTTP_204_NO_CONTENT,
    name="delete_organization",
    summary="Delete an organization with its users and keys; other services drop its data on the event",
)
