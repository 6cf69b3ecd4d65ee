"""Users of the organization (admins). Auth scopes every query by the actor's org: another org's user is a
404."""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import UpdateUserRequest, UserDetail, UserUpdate
from fastapi import APIRouter
from starlette import status as http

from ..deps import IdPath, OrgAdmin, RpcDep, SensitiveAdmin
from ..errors import API_ERRORS
from ..replies import rpc_route

router = APIRouter(prefix="/admin/users", tags=["admin"], responses=API_ERRORS)


rpc_route(
    router,
    "GET",
    "",
    endpoints.Auth.LIST_USERS,
    OrgAdmin,
    name="list_users",
    summary="The organization's users",
)
rpc_route(
    router,
    "POST",
    "",
    endpoints.Auth.CREATE_USER,
    OrgAdmin,
    body="user",
    status_code=http.HTTP_201_CREATED,
    name="create_user",
    summary="Create a user, or invite one (no password: a one-time password is in this answer only)",
)
rpc_route(
    router,
    "PATCH",
    "/{user_id}",
    endpoints.Auth.UPDATE_USER,
    SensitiveAdmin,
    body="user",
    name="update_user",
    summary="Change a user's name or role, or (de)activate them",
)


@router.delete(
    "/{user_id}",
    response_model=UserDetail,
    summary="Deactivate a user (their sessions end; the record and its audit trail stay)",
)
async def deactivate_user(user_id: IdPath, principal: OrgAdmin, rpc: RpcDep) -> UserDetail:
    request = UpdateUserRequest(actor=principal.actor, id=user_id, user=UserUpdate(is_active=False))
    return await rpc.call(endpoints.Auth.UPDATE_USER, request)
