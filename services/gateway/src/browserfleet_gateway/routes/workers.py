"""Workers, at the seed's paths. Admins (and `workers:admin` keys): the list, invites (one-time, or a pool
invite every replica registers with), drain and remove. A worker: registration with an invite code, and its
own status, public key and departure with its `sk_worker_…` key (its own id only)."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.workers import (
    CreateInviteRequest,
    DeregisterRequest,
    InviteCreate,
    InvitePublic,
    PublicKeyBody,
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
from ..replies import no_content, no_content_route, relay_route, rpc_route

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


rpc_route(
    admin_router,
    "GET",
    "/invites",
    endpoints.Workers.LIST_INVITES,
    WorkersAdmin,
    name="list_invites",
    summary="The organization's invites (no codes)",
)
rpc_route(
    admin_router,
    "DELETE",
    "/invites/{invite_id}",
    endpoints.Workers.REVOKE_INVITE,
    WorkersAdmin,
    status_code=http.HTTP_204_NO_CONTENT,
    name="revoke_invite",
    summary="Revoke an invite: nobody registers with it any more (its workers stay)",
)
rpc_route(
    admin_router,
    "GET",
    "",
    endpoints.Workers.LIST,
    WorkersAdmin,
    name="list_workers",
    summary="The organization's workers (and the platform's serving it): status online/offline/busy/draining/"
    "error, last_seen, pool, tags, version, device info",
)
rpc_route(
    admin_router,
    "DELETE",
    "/{worker_id}",
    endpoints.Workers.REVOKE,
    WorkersAdmin,
    status_code=http.HTTP_204_NO_CONTENT,
    name="remove_worker",
    summary="Remove a worker: its key stops working at once and a task it is running is given back",
)
rpc_route(
    admin_router,
    "POST",
    "/{worker_id}/drain",
    endpoints.Workers.DRAIN,
    WorkersAdmin,
    name="drain_worker",
    summary="Drain a worker: it takes no new task and finishes (or hands back) the ones it runs",
)


# no user's token: the invite code is the credential, checked by worker-gateway
relay_route(
    router,
    "POST",
    "/register",
    endpoints.Workers.REGISTER,
    public("the invite code is the credential"),
    status_code=http.HTTP_201_CREATED,
    name="register_worker",
    summary="Register a worker with an invite code (and its device info and X25519 public key); the key "
    "(`api_key`, also `worker_key`) is shown only in this answer",
)


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
