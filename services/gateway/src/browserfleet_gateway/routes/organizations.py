"""Organizations (platform operator). Admins of their own org reach auth, which answers only to a platform
operator: 403 for the list and create, 404 for an organization id, so ids reveal nothing."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import (
    CreateOrganizationRequest,
    OrganizationCreate,
    OrganizationCreated,
    OrganizationDetail,
    OrganizationUpdate,
    UpdateOrganizationRequest,
)
from browserfleet_contracts.common import ById, OrgScoped
from fastapi import APIRouter, Depends, Response
from starlette import status as http

from ..deps import IdPath, Principal, RpcDep, access
from ..errors import API_ERRORS
from ..replies import no_content, no_content_route

Operator = Annotated[Principal, Depends(access("admin", note="platform operator, checked by auth"))]

router = APIRouter(prefix="/organizations", tags=["organizations"], responses=API_ERRORS)


@router.get("", response_model=list[OrganizationDetail], summary="All organizations")
async def list_organizations(principal: Operator, rpc: RpcDep) -> list[OrganizationDetail]:
    return await rpc.call(endpoints.Auth.LIST_ORGANIZATIONS, OrgScoped(actor=principal.actor))


@router.post(
    "",
    response_model=OrganizationCreated,
    status_code=http.HTTP_201_CREATED,
    summary="Create an organization (and its first admin, whose password is in this answer only)",
)
async def create_organization(
    body: OrganizationCreate, principal: Operator, rpc: RpcDep
) -> OrganizationCreated:
    request = CreateOrganizationRequest(actor=principal.actor, organization=body)
    return await rpc.call(endpoints.Auth.CREATE_ORGANIZATION, request)


@router.put(
    "/{org_id}",
    response_model=OrganizationDetail,
    summary="Change an organization's name, slug, plan or settings",
)
async def update_organization(
    org_id: IdPath, body: OrganizationUpdate, principal: Operator, rpc: RpcDep
) -> OrganizationDetail:
    request = UpdateOrganizationRequest(actor=principal.actor, id=org_id, organization=body)
    return await rpc.call(endpoints.Auth.UPDATE_ORGANIZATION, request)


@no_content_route(
    router,
    "/{org_id}",
    summary="Delete an organization with its users and keys; other services drop its data on the event",
)
async def delete_organization(org_id: IdPath, principal: Operator, rpc: RpcDep) -> Response:
    return await no_content(rpc, endpoints.Auth.DELETE_ORGANIZATION, ById(actor=principal.actor, id=org_id))
