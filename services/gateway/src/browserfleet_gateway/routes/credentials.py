"""Credentials: secrets tasks name as `{{ secrets.NAME }}`, kept by the vault; a value is never returned.

Two doors to the same credentials: `/api/v1/credentials` (store or replace by name, delete by name) and the
seed's `/admin/credentials` (add, list, and change or delete by id). Another org's id is a 404."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.secret_refs import SECRET_NAME_PATTERN
from fastapi import APIRouter, Depends, Path
from starlette import status as http

from ..deps import Principal, access
from ..errors import API_ERRORS
from ..replies import rpc_route

CredentialsRead = Annotated[Principal, Depends(access("viewer", scope="credentials:write"))]
CredentialsWrite = Annotated[Principal, Depends(access("user", scope="credentials:write"))]

router = APIRouter(prefix="/api/v1/credentials", tags=["credentials"], responses=API_ERRORS)
admin_router = APIRouter(prefix="/admin/credentials", tags=["admin", "credentials"], responses=API_ERRORS)


# one declaration at both paths; the router's prefix makes each operation id its own
for _router in (router, admin_router):
    rpc_route(
        _router,
        "POST",
        "",
        endpoints.Vault.PUT_CREDENTIAL,
        CredentialsWrite,
        body="credential",
        status_code=http.HTTP_201_CREATED,
        name="put_credential",
        summary="Store (or replace) a credential; its value is never returned",
    )
    rpc_route(
        _router,
        "GET",
        "",
        endpoints.Vault.LIST_CREDENTIALS,
        CredentialsRead,
        name="list_credentials",
        summary="List credentials (names only)",
    )


rpc_route(
    router,
    "DELETE",
    "/{name}",
    endpoints.Vault.DELETE_CREDENTIAL,
    CredentialsWrite,
    path_param=Annotated[str, Path(pattern=SECRET_NAME_PATTERN)],
    status_code=http.HTTP_204_NO_CONTENT,
    name="delete_credential",
    summary="Delete a credential",
)
rpc_route(
    admin_router,
    "PUT",
    "/{credential_id}",
    endpoints.Vault.UPDATE_CREDENTIAL,
    CredentialsWrite,
    body="credential",
    name="update_credential",
    summary="Change a credential's value, type or description (its name stays: tasks reference it)",
)
rpc_route(
    admin_router,
    "DELETE",
    "/{credential_id}",
    endpoints.Vault.DELETE_CREDENTIAL_BY_ID,
    CredentialsWrite,
    status_code=http.HTTP_204_NO_CONTENT,
    name="delete_credential_by_id",
    summary="Delete a credential by id",
)
