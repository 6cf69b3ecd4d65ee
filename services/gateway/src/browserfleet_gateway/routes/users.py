"""Users of the organization (admins). Auth scopes every query by the actor's org: another org's user is a
404."""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import (
    CreateUserRequest,
    UpdateUserRequest,
    UserCreate,
    UserCreated,
    UserDetail,
    UserUpdate,
)
from browserfleet_contracts.common import OrgScoped
from fastapi import APIRouter
from starlette import status as http

from ..deps import IdPath, OrgAdmin, RpcDep, SensitiveAdmin
from ..errors import API_ERRORS

router = APIRouter(prefix="/admin/users", tags=["admin"], responses=API_ERRORS)


@router.get("", response_model=list[UserDetail], summary="The organization's users")
async def list_users(principal: OrgAdmin, rpc: RpcDep) -> list[UserDetail]:
    return await rpc.call(endpoints.Auth.LIST_USERS, OrgScoped(actor=principal.actor))


@router.post(
    "",
    response_model=UserCreated,
    status_code=http.HTTP_201_CREATED,
    summary="Create a user, or invite one (no password: a one-time password is in this answer only)",
)
async def create_user(body: UserCreate, principal: OrgAdmin, rpc: RpcDep) -> UserCreated:
    return await rpc.call(endpoints.Auth.CREATE_USER, CreateUserRequest(actor=principal.actor, user=body))


@router.patch(
    "/{user_id}",
    response_model=UserDetail,
    summary="Change a user's name or role, or (de)activate them",
)
async def update_user(
    user_id: IdPath, body: UserUpdate, principal: SensitiveAdmin, rpc: RpcDep
) -> UserDetail:
    request = UpdateUserRequest(actor=principal.actor, id=user_id, user=body)
    return await rpc.call(endpoints.Auth.UPDATE_USER, request)


@router.delete(
    "/{user_id}",
    response_model=UserDetail,
    summary="Deactivate a user (their sessions end; the record and its audit trail stay)",
)
async def deactivate_user(user_id: IdPath, principal: OrgAdmin, rpc: RpcDep) -> UserDetail:
    request = UpdateUserRequest(actor=principal.actor, id=user_id, user=UserUpdate(is_active=False))
    return await rpc.call(endpoints.Auth.UPDATE_USER, request)
