"""API keys of the organization (admins). Auth scopes every query by the actor's org: another org's key is a
404."""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, CreateApiKeyRequest
from browserfleet_contracts.common import ById, OrgScoped
from fastapi import APIRouter, Response
from starlette import status as http

from ..deps import IdPath, OrgAdmin, RpcDep, SensitiveAdmin
from ..errors import API_ERRORS
from ..replies import no_content, no_content_route

router = APIRouter(prefix="/admin/api-keys", tags=["admin"], responses=API_ERRORS)


@router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=http.HTTP_201_CREATED,
    summary="Create an API key (`sk_api_…`); the key is shown only in this answer",
)
async def create_api_key(body: ApiKeyCreate, principal: SensitiveAdmin, rpc: RpcDep) -> ApiKeyCreated:
    request = CreateApiKeyRequest(actor=principal.actor, key=body)
    return await rpc.call(endpoints.Auth.CREATE_API_KEY, request)


@router.get("", response_model=list[ApiKeyPublic], summary="List API keys")
async def list_api_keys(principal: OrgAdmin, rpc: RpcDep) -> list[ApiKeyPublic]:
    return await rpc.call(endpoints.Auth.LIST_API_KEYS, OrgScoped(actor=principal.actor))


@no_content_route(router, "/{key_id}", summary="Revoke an API key; every gateway stops accepting it at once")
async def revoke_api_key(key_id: IdPath, principal: OrgAdmin, rpc: RpcDep) -> Response:
    return await no_content(rpc, endpoints.Auth.REVOKE_API_KEY, ById(actor=principal.actor, id=key_id))
