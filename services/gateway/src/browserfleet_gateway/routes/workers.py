"""Workers, at the seed's paths. Admins (and `workers:admin` keys): the list, invites (one-time, or a pool
invite every replica registers with), drain and remove. A worker: registration with an invite code, and its
own status, public key and departure with its `sk_worker_…` key (its own id only)."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import ById
from browserfleet_contracts.workers import (
    CreateInviteRequest,
    DeregisterRequest,
    InviteCreate,
    InviteInfo,
    InvitePublic,
    ListInvitesRequest,
    ListWorkersRequest,
    PublicKeyBody,
    RegisterReply,
    RegisterRequest,
    RotateKeyRequest,
    WorkerIdentity,
    WorkerPublic,
    WorkerStatusReport,
    WorkerStatusRequest,
)
from fastapi import APIRouter, Body, Depends, Response
from starlette import status as http

from ..deps import IdPath, Principal, RpcDep, access, public, worker_key
from ..errors import API_ERRORS
from ..replies import no_content, no_content_route

WorkersAdmin = Annotated[Principal, Depends(access("admin", scope="workers:admin"))]
WorkerKey = Annotated[str, Depends(worker_key("the worker's own key, for its own id only"))]

admin_router = APIRouter(prefix="/admin/workers", tags=["admin"], responses=API_ERRORS)
router = APIRouter(prefix="/workers", tags=["workers"], responses=API_ERRORS)


@admin_router.post(
    "/invite",
    response_model=InvitePublic,
    status_code=http.HTTP_201_CREATED,
    summary="Create an invite code (`invite_code`, shown only in this answer): one-time, or a pool invite "
    "(`multi_use`) each replica registers with for an identity of its own",
)
async def create_invite(
    principal: WorkersAdmin, rpc: RpcDep, body: Annotated[InviteCreate | None, Body()] = None
) -> InvitePublic:
    request = CreateInviteRequest(actor=principal.actor, invite=body or InviteCreate())
    return await rpc.call(endpoints.Workers.CREATE_INVITE, request)


@admin_router.get(
    "/invites", response_model=list[InviteInfo], summary="The organization's invites (no codes)"
)
async def list_invites(principal: WorkersAdmin, rpc: RpcDep) -> list[InviteInfo]:
    return await rpc.call(endpoints.Workers.LIST_INVITES, ListInvitesRequest(actor=principal.actor))


@no_content_route(
    admin_router,
    "/invites/{invite_id}",
    summary="Revoke an invite: nobody registers with it any more (its workers stay)",
)
async def revoke_invite(invite_id: IdPath, principal: WorkersAdmin, rpc: RpcDep) -> Response:
    return await no_content(rpc, endpoints.Workers.REVOKE_INVITE, ById(actor=principal.actor, id=invite_id))


@admin_router.get(
    "",
    response_model=list[WorkerPublic],
    summary="The organization's workers (and the platform's serving it): status online/offline/busy/draining/"
    "error, last_seen, pool, tags, version, device info",
)
async def list_workers(principal: WorkersAdmin, rpc: RpcDep) -> list[WorkerPublic]:
    return await rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=principal.actor))


@no_content_route(
    admin_router,
    "/{worker_id}",
    summary="Remove a worker: its key stops working at once and a task it is running is given back",
)
async def remove_worker(worker_id: IdPath, principal: WorkersAdmin, rpc: RpcDep) -> Response:
    return await no_content(rpc, endpoints.Workers.REVOKE, ById(actor=principal.actor, id=worker_id))


@admin_router.post(
    "/{worker_id}/drain",
    response_model=WorkerPublic,
    summary="Drain a worker: it takes no new task and finishes (or hands back) the ones it runs",
)
async def drain_worker(worker_id: IdPath, principal: WorkersAdmin, rpc: RpcDep) -> WorkerPublic:
    return await rpc.call(endpoints.Workers.DRAIN, ById(actor=principal.actor, id=worker_id))


@router.post(
    "/register",
    response_model=RegisterReply,
    status_code=http.HTTP_201_CREATED,
    summary="Register a worker with an invite code (and its device info and X25519 public key); the key "
    "(`api_key`, also `worker_key`) is shown only in this answer",
    dependencies=[Depends(public("the invite code is the credential"))],
)
async def register_worker(body: RegisterRequest, rpc: RpcDep) -> RegisterReply:
    # No JWT: the invite code is the credential, checked by worker-gateway.
    return await rpc.call(endpoints.Workers.REGISTER, body)


@router.put("/{worker_id}/status", response_model=WorkerPublic, summary="A worker reports its own status")
async def report_status(
    worker_id: IdPath, body: WorkerStatusReport, key: WorkerKey, rpc: RpcDep
) -> WorkerPublic:
    request = WorkerStatusRequest(**body.model_dump(), worker_key=key, worker_id=worker_id)
    return await rpc.call(endpoints.Workers.STATUS, request)


@router.put(
    "/{worker_id}/key",
    response_model=WorkerIdentity,
    summary="A worker's new X25519 public key (at every start); the vault seals its secrets to it",
)
async def rotate_key(worker_id: IdPath, body: PublicKeyBody, key: WorkerKey, rpc: RpcDep) -> WorkerIdentity:
    request = RotateKeyRequest(worker_key=key, worker_id=worker_id, **body.model_dump())
    return await rpc.call(endpoints.Workers.ROTATE_KEY, request)


@no_content_route(
    router,
    "/{worker_id}",
    summary="A worker leaves for good (a pool replica's clean shutdown): its identity and key are removed",
)
async def deregister(worker_id: IdPath, key: WorkerKey, rpc: RpcDep) -> Response:
    return await no_content(
        rpc, endpoints.Workers.DEREGISTER, DeregisterRequest(worker_key=key, worker_id=worker_id)
    )
