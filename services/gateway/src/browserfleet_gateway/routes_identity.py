"""Identity routes: API keys, users, the audit log, the organization's policy (org admins) and organizations
(platform operator).

Thin like routes.py: authenticate, build the contract request with the caller's `Actor`, one RPC call.
Auth scopes every query by the actor's org, so another org's key or user is a 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    AuditEntry,
    CreateApiKeyRequest,
    CreateOrganizationRequest,
    CreateUserRequest,
    ListAuditRequest,
    OrganizationCreate,
    OrganizationCreated,
    OrganizationDetail,
    OrganizationUpdate,
    OrgPolicy,
    UpdateOrganizationRequest,
    UpdateOrgPolicyRequest,
    UpdateUserRequest,
    UserCreate,
    UserCreated,
    UserDetail,
    UserUpdate,
)
from browserfleet_contracts.common import ById, OrgScoped, Page
from browserfleet_contracts.vault import CheckNamesReply, CheckNamesRequest
from browserfleet_core.errors import Invalid
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from starlette import status as http

from .deps import IdPath, Principal, RpcDep, access
from .errors import error_responses

_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)

OrgAdmin = Annotated[Principal, Depends(access("admin"))]
OrgMember = Annotated[Principal, Depends(access("viewer"))]
# Organizations: admins of their own org reach auth, which answers only to a platform operator
# (403 for the list and create, 404 for an organization id, so ids reveal nothing).
Operator = Annotated[Principal, Depends(access("admin", note="platform operator, checked by auth"))]

router = APIRouter(responses=_ERRORS)


# --- API keys ---------------------------------------------------------------------------------------
@router.post(
    "/admin/api-keys",
    response_model=ApiKeyCreated,
    status_code=http.HTTP_201_CREATED,
    tags=["admin"],
    summary="Create an API key (`sk_api_…`); the key is shown only in this answer",
)
async def create_api_key(body: ApiKeyCreate, principal: OrgAdmin, rpc: RpcDep) -> ApiKeyCreated:
    request = CreateApiKeyRequest(actor=principal.actor, key=body)
    return await rpc.call(subjects.Auth.CREATE_API_KEY, request, ApiKeyCreated)


@router.get("/admin/api-keys", response_model=list[ApiKeyPublic], tags=["admin"], summary="List API keys")
async def list_api_keys(principal: OrgAdmin, rpc: RpcDep) -> list[ApiKeyPublic]:
    return await rpc.call(subjects.Auth.LIST_API_KEYS, OrgScoped(actor=principal.actor), list[ApiKeyPublic])


@router.delete(
    "/admin/api-keys/{key_id}",
    status_code=http.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["admin"],
    summary="Revoke an API key; every gateway stops accepting it at once",
)
async def revoke_api_key(key_id: IdPath, principal: OrgAdmin, rpc: RpcDep) -> Response:
    await rpc.call(subjects.Auth.REVOKE_API_KEY, ById(actor=principal.actor, id=key_id), ApiKeyPublic)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


# --- users ------------------------------------------------------------------------------------------
@router.get(
    "/admin/users", response_model=list[UserDetail], tags=["admin"], summary="The organization's users"
)
async def list_users(principal: OrgAdmin, rpc: RpcDep) -> list[UserDetail]:
    return await rpc.call(subjects.Auth.LIST_USERS, OrgScoped(actor=principal.actor), list[UserDetail])


@router.post(
    "/admin/users",
    response_model=UserCreated,
    status_code=http.HTTP_201_CREATED,
    tags=["admin"],
    summary="Create a user, or invite one (no password: a one-time password is in this answer only)",
)
async def create_user(body: UserCreate, principal: OrgAdmin, rpc: RpcDep) -> UserCreated:
    return await rpc.call(
        subjects.Auth.CREATE_USER, CreateUserRequest(actor=principal.actor, user=body), UserCreated
    )


@router.patch(
    "/admin/users/{user_id}",
    response_model=UserDetail,
    tags=["admin"],
    summary="Change a user's name or role, or (de)activate them",
)
async def update_user(user_id: IdPath, body: UserUpdate, principal: OrgAdmin, rpc: RpcDep) -> UserDetail:
    request = UpdateUserRequest(actor=principal.actor, id=user_id, user=body)
    return await rpc.call(subjects.Auth.UPDATE_USER, request, UserDetail)


@router.delete(
    "/admin/users/{user_id}",
    response_model=UserDetail,
    tags=["admin"],
    summary="Deactivate a user (their sessions end; the record and its audit trail stay)",
)
async def deactivate_user(user_id: IdPath, principal: OrgAdmin, rpc: RpcDep) -> UserDetail:
    request = UpdateUserRequest(actor=principal.actor, id=user_id, user=UserUpdate(is_active=False))
    return await rpc.call(subjects.Auth.UPDATE_USER, request, UserDetail)


# --- audit log --------------------------------------------------------------------------------------
@router.get(
    "/admin/audit-log", response_model=Page[AuditEntry], tags=["admin"], summary="The audit log, newest first"
)
async def audit_log(
    principal: OrgAdmin,
    rpc: RpcDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[AuditEntry]:
    request = ListAuditRequest(
        actor=principal.actor, action=action, since=since, until=until, limit=limit, cursor=cursor
    )
    return await rpc.call(subjects.Auth.LIST_AUDIT, request, Page[AuditEntry])


@router.get(
    "/admin/audit-log/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "one JSON entry per line"}},
    tags=["admin"],
    summary="Export the audit log as JSON lines (same filters), page by page",
)
async def export_audit_log(
    principal: OrgAdmin,
    rpc: RpcDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    first = ListAuditRequest(actor=principal.actor, action=action, since=since, until=until, limit=1000)
    page: Page[AuditEntry] = await rpc.call(subjects.Auth.LIST_AUDIT, first, Page[AuditEntry])
    return StreamingResponse(
        _lines(rpc, first, page),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit-log.jsonl"'},
    )


async def _lines(rpc: RpcClient, request: ListAuditRequest, page: Page[AuditEntry]) -> AsyncIterator[bytes]:
    while True:
        for entry in page.items:
            yield entry.model_dump_json().encode() + b"\n"
        if page.next_cursor is None:
            return
        request = request.model_copy(update={"cursor": page.next_cursor})
        page = await rpc.call(subjects.Auth.LIST_AUDIT, request, Page[AuditEntry])


# --- the organization's policy (what every task of the org is held to) -----------------------------
@router.get(
    "/api/v1/org/policy",
    response_model=OrgPolicy,
    tags=["organization"],
    summary="The organization's policy: allowed domains, evaluate, proxy",
)
async def get_org_policy(principal: OrgMember, rpc: RpcDep) -> OrgPolicy:
    return await rpc.call(subjects.Auth.GET_ORG_POLICY, OrgScoped(actor=principal.actor), OrgPolicy)


@router.put(
    "/api/v1/org/policy",
    response_model=OrgPolicy,
    tags=["organization"],
    summary="Replace the organization's policy (admins); workers apply it to the next tasks within seconds",
)
async def put_org_policy(body: OrgPolicy, principal: OrgAdmin, rpc: RpcDep) -> OrgPolicy:
    names = body.secret_names()
    if names:  # like a task's references: every secret the proxy names must exist in the vault
        reply: CheckNamesReply = await rpc.call(
            subjects.Vault.CHECK_NAMES,
            CheckNamesRequest(actor=principal.actor, names=sorted(names)),
            CheckNamesReply,
        )
        if reply.missing:
            raise Invalid(
                f"proxy: unknown secret(s): {', '.join(sorted(reply.missing))}",
                field="proxy",
                code="unknown_secret",
            )
    request = UpdateOrgPolicyRequest(actor=principal.actor, policy=body)
    return await rpc.call(subjects.Auth.UPDATE_ORG_POLICY, request, OrgPolicy)


# --- organizations (platform operator) --------------------------------------------------------------
@router.get(
    "/organizations",
    response_model=list[OrganizationDetail],
    tags=["organizations"],
    summary="All organizations",
)
async def list_organizations(principal: Operator, rpc: RpcDep) -> list[OrganizationDetail]:
    return await rpc.call(
        subjects.Auth.LIST_ORGANIZATIONS, OrgScoped(actor=principal.actor), list[OrganizationDetail]
    )


@router.post(
    "/organizations",
    response_model=OrganizationCreated,
    status_code=http.HTTP_201_CREATED,
    tags=["organizations"],
    summary="Create an organization (and its first admin, whose password is in this answer only)",
)
async def create_organization(
    body: OrganizationCreate, principal: Operator, rpc: RpcDep
) -> OrganizationCreated:
    request = CreateOrganizationRequest(actor=principal.actor, organization=body)
    return await rpc.call(subjects.Auth.CREATE_ORGANIZATION, request, OrganizationCreated)


@router.put(
    "/organizations/{org_id}",
    response_model=OrganizationDetail,
    tags=["organizations"],
    summary="Change an organization's name, slug, plan or settings",
)
async def update_organization(
    org_id: IdPath, body: OrganizationUpdate, principal: Operator, rpc: RpcDep
) -> OrganizationDetail:
    request = UpdateOrganizationRequest(actor=principal.actor, id=org_id, organization=body)
    return await rpc.call(subjects.Auth.UPDATE_ORGANIZATION, request, OrganizationDetail)


@router.delete(
    "/organizations/{org_id}",
    status_code=http.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["organizations"],
    summary="Delete an organization with its users and keys; other services drop its data on the event",
)
async def delete_organization(org_id: IdPath, principal: Operator, rpc: RpcDep) -> Response:
    await rpc.call(subjects.Auth.DELETE_ORGANIZATION, ById(actor=principal.actor, id=org_id), Any)
    return Response(status_code=http.HTTP_204_NO_CONTENT)
