"""API keys of the organization (admins). Auth scopes every query by the actor's org: another org's key is a
404."""

from __future__ import annotations

from browserfleet_contracts import endpoints
from fastapi import APIRouter
from starlette import status as http

from ..deps import OrgAdmin, SensitiveAdmin
from ..errors import API_ERRORS
from ..replies import rpc_route

router = APIRouter(prefix="/admin/api-keys", tags=["admin"], responses=API_ERRORS)


rpc_route(
    router,
    "POST",
    "",
    endpoints.Auth.CREATE_API_KEY,
    SensitiveAdmin,
    body="key",
    status_code=http.HTTP_201_CREATED,
    name="create_api_key",
    summary="Create an API key (`sk_api_…`); the key is shown only in this answer",
)
rpc_route(
    router,
    "GET",
    "",
    endpoints.Auth.LIST_API_KEYS,
    OrgAdmin,
    name="list_api_keys",
    summary="List API keys",
)
rpc_route(
    router,
    "DELETE",
    "/{key_id}",
    endpoints.Auth.REVOKE_API_KEY,
    OrgAdmin,
    status_code=http.HTTP_204_NO_CONTENT,
    name="revoke_api_key",
    summary="Revoke an API key; every gateway stops accepting it at once",
)
