"""Credentials: secrets tasks name as `{{ secrets.NAME }}`, kept by the vault; a value is never returned.

Two doors to the same credentials: `/api/v1/credentials` (store or replace by name, delete by name) and the
seed's `/admin/credentials` (add, list, and change or delete by id). Another org's id is a 404."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import ById, OrgScoped
from browserfleet_contracts.secret_refs import SECRET_NAME_PATTERN
from browserfleet_contracts.vault import (
    CredentialCreate,
    CredentialPublic,
    CredentialUpdate,
    NameRequest,
    PutCredentialRequest,
    UpdateCredentialRequest,
)
from fastapi import APIRouter, Depends, Path, Response
from starlette import status as http

from ..deps import IdPath, Principal, RpcDep, access
from ..errors import API_ERRORS
from ..replies import no_content, no_content_route

CredentialsRead = Annotated[Principal, Depends(access("viewer", scope="credentials:write"))]
CredentialsWrite = Annotated[Principal, Depends(access("user", scope="credentials:write"))]

router = APIRouter(prefix="/api/v1/credentials", tags=["credentials"], responses=API_ERRORS)
admin_router = APIRouter(prefix="/admin/credentials", tags=["admin", "credentials"], responses=API_ERRORS)

_PUT_SUMMARY = "Store (or replace) a credential; its value is never returned"
_LIST_SUMMARY = "List credentials (names only)"


async def put_credential(
    body: CredentialCreate, principal: CredentialsWrite, rpc: RpcDep
) -> CredentialPublic:
    request = PutCredentialRequest(actor=principal.actor, credential=body)
    return await rpc.call(endpoints.Vault.PUT_CREDENTIAL, request)


async def list_credentials(principal: CredentialsRead, rpc: RpcDep) -> list[CredentialPublic]:
    return await rpc.call(endpoints.Vault.LIST_CREDENTIALS, OrgScoped(actor=principal.actor))


# one handler at both paths; the router's prefix makes each operation id its own
for _router in (router, admin_router):
    _router.add_api_route(
        "",
        put_credential,
        methods=["POST"],
        response_model=CredentialPublic,
        status_code=http.HTTP_201_CREATED,
        summary=_PUT_SUMMARY,
    )
    _router.add_api_route(
        "", list_credentials, methods=["GET"], response_model=list[CredentialPublic], summary=_LIST_SUMMARY
    )


@no_content_route(router, "/{name}", summary="Delete a credential")
async def delete_credential(
    name: Annotated[str, Path(pattern=SECRET_NAME_PATTERN)], principal: CredentialsWrite, rpc: RpcDep
) -> Response:
    return await no_content(
        rpc, endpoints.Vault.DELETE_CREDENTIAL, NameRequest(actor=principal.actor, name=name)
    )


@admin_router.put(
    "/{credential_id}",
    response_model=CredentialPublic,
    summary="Change a credential's value, type or description (its name stays: tasks reference it)",
)
async def update_credential(
    credential_id: IdPath, body: CredentialUpdate, principal: CredentialsWrite, rpc: RpcDep
) -> CredentialPublic:
    request = UpdateCredentialRequest(actor=principal.actor, id=credential_id, credential=body)
    return await rpc.call(endpoints.Vault.UPDATE_CREDENTIAL, request)


@no_content_route(admin_router, "/{credential_id}", summary="Delete a credential by id")
async def delete_credential_by_id(
    credential_id: IdPath, principal: CredentialsWrite, rpc: RpcDep
) -> Response:
    return await no_content(
        rpc, endpoints.Vault.DELETE_CREDENTIAL_BY_ID, ById(actor=principal.actor, id=credential_id)
    )
