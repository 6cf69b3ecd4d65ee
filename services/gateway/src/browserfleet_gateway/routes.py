"""HTTP routes. Each one authenticates, builds the contract request with the caller's `Actor`, makes one
or two RPC calls and returns the contract reply; no business logic lives here."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal
from urllib.parse import quote

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import (
    Jwks,
    LoginCommand,
    LoginRequest,
    MePublic,
    MeRequest,
    RefreshRequest,
    TokenPair,
)
from browserfleet_contracts.common import Ack, ById, OrgScoped, Page
from browserfleet_contracts.tasks import (
    SECRET_NAME_PATTERN,
    CreateTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    TaskCreate,
    TaskPublic,
    TaskStatus,
)
from browserfleet_contracts.vault import (
    CredentialCreate,
    CredentialPublic,
    NameRequest,
    PutCredentialRequest,
)
from browserfleet_contracts.webhooks import (
    CreateEndpointRequest,
    ListDeliveriesRequest,
    WebhookDeliveryPublic,
    WebhookEndpointCreate,
    WebhookEndpointPublic,
)
from browserfleet_contracts.workers import (
    CreateInviteRequest,
    InviteCreate,
    InvitePublic,
    ListWorkersRequest,
    RegisterReply,
    RegisterRequest,
    WorkerPublic,
)
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel
from starlette import status as http

from . import artifacts
from .deps import (
    CurrentPrincipal,
    GatewayState,
    IdPath,
    Principal,
    RpcDep,
    StateDep,
    TasksRead,
    TasksWrite,
    access,
    client_ip,
    public,
)
from .errors import error_responses
from .routes_artifacts import AttemptQuery, find_artifact
from .routes_tasks import check_task_references

_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)
# Every route declares who may call it (a test walks the route table): users by minimum role, API keys by scope.
CredentialsRead = Annotated[Principal, Depends(access("viewer", scope="credentials:write"))]
CredentialsWrite = Annotated[Principal, Depends(access("user", scope="credentials:write"))]
WebhooksAdmin = Annotated[Principal, Depends(access("admin", scope="webhooks:admin"))]
WorkersAdmin = Annotated[Principal, Depends(access("admin", scope="workers:admin"))]

auth_router = APIRouter(tags=["auth"], responses=_ERRORS)
tasks_router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], responses=_ERRORS)
credentials_router = APIRouter(prefix="/api/v1/credentials", tags=["credentials"], responses=_ERRORS)
admin_router = APIRouter(prefix="/admin", tags=["admin"], responses=_ERRORS)
workers_router = APIRouter(prefix="/workers", tags=["workers"], responses=_ERRORS)
ops_router = APIRouter(tags=["ops"], dependencies=[Depends(public("operations: health and metrics"))])


# --- auth -------------------------------------------------------------------------------------------
@auth_router.post(
    "/auth/login",
    response_model=TokenPair,
    summary="Exchange email and password for tokens",
    dependencies=[Depends(public("the password is the credential", login=True))],
)
async def login(body: LoginRequest, request: Request, rpc: RpcDep) -> TokenPair:
    command = LoginCommand(**body.model_dump(), client_ip=client_ip(request))
    return await rpc.call(subjects.Auth.LOGIN, command, TokenPair)


@auth_router.post(
    "/auth/refresh",
    response_model=TokenPair,
    summary="Rotate a refresh token",
    dependencies=[Depends(public("the refresh token is the credential"))],
)
async def refresh(body: RefreshRequest, rpc: RpcDep) -> TokenPair:
    return await rpc.call(subjects.Auth.REFRESH, body, TokenPair)


@auth_router.post(
    "/auth/logout",
    response_model=Ack,
    summary="Revoke a refresh token and its family",
    dependencies=[Depends(public("the refresh token is the credential"))],
)
async def logout(body: RefreshRequest, rpc: RpcDep) -> Ack:
    # The access token is short-lived and may already be expired; the refresh token is the credential here.
    await rpc.call(subjects.Auth.LOGOUT, body, Any)
    return Ack()


@auth_router.get("/auth/me", response_model=MePublic, summary="The caller, their role and organization")
async def me(principal: CurrentPrincipal, rpc: RpcDep) -> MePublic:
    assert principal.user_id is not None
    return await rpc.call(
        subjects.Auth.ME, MeRequest(user_id=principal.user_id, org_id=principal.org_id), MePublic
    )


async def _jwks(rpc: RpcDep, response: Response) -> Jwks:
    response.headers["Cache-Control"] = "public, max-age=300"
    return await rpc.call(subjects.Auth.JWKS, {}, Jwks)


_PUBLIC_KEYS = [Depends(public("public keys"))]
auth_router.add_api_route(
    "/.well-known/jwks.json",
    _jwks,
    methods=["GET"],
    response_model=Jwks,
    summary="Public signing keys",
    dependencies=_PUBLIC_KEYS,
)
auth_router.add_api_route(
    "/auth/jwks",
    _jwks,
    methods=["GET"],
    response_model=Jwks,
    summary="Public signing keys",
    dependencies=_PUBLIC_KEYS,
)


# --- tasks ------------------------------------------------------------------------------------------
@tasks_router.post("", response_model=TaskPublic, status_code=http.HTTP_201_CREATED, summary="Submit a task")
async def create_task(
    body: TaskCreate,
    principal: TasksWrite,
    rpc: RpcDep,
    state: StateDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", max_length=255, description="same key, same task: retries are safe"),
    ] = None,
) -> TaskPublic:
    js = state.nc.jetstream() if state.nc is not None else None
    await check_task_references(
        rpc, js, principal.actor, body
    )  # secrets and artifacts it names: 422 naming the field
    task: TaskPublic = await rpc.call(
        subjects.Scheduler.CREATE_TASK,
        CreateTaskRequest(actor=principal.actor, task=body, idempotency_key=idempotency_key),
        TaskPublic,
    )
    response.headers["Location"] = f"/api/v1/tasks/{task.id}"
    return task


@tasks_router.get("", response_model=Page[TaskPublic], summary="List the organization's tasks, newest first")
async def list_tasks(
    principal: TasksRead,
    rpc: RpcDep,
    status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[TaskPublic]:
    request = ListTasksRequest(actor=principal.actor, status=status, limit=limit, cursor=cursor)
    return await rpc.call(subjects.Scheduler.LIST_TASKS, request, Page[TaskPublic])


async def _get_task(rpc: RpcDep, principal: Principal, task_id: str) -> TaskPublic:
    return await rpc.call(
        subjects.Scheduler.GET_TASK, GetTaskRequest(actor=principal.actor, task_id=task_id), TaskPublic
    )


@tasks_router.get("/{task_id}", response_model=TaskPublic, summary="One task, with its result")
async def get_task(task_id: IdPath, principal: TasksRead, rpc: RpcDep) -> TaskPublic:
    return await _get_task(rpc, principal, task_id)


_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9_.-]")


@tasks_router.get(
    "/{task_id}/artifacts/{name}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the artifact's bytes"}},
    summary="Download an artifact (screenshot, PDF, ...) of a task: the latest attempt's, or `?attempt=N`'s",
)
async def download_artifact(
    task_id: IdPath,
    name: Annotated[str, Path(min_length=1, max_length=200)],
    principal: TasksRead,
    state: StateDep,
    rpc: RpcDep,
    attempt: AttemptQuery = None,
) -> StreamingResponse:
    task = await _get_task(rpc, principal, task_id)  # org-scoped: another org's task is a 404 here
    ref = find_artifact(task, name, attempt)
    assert state.nc is not None
    js = state.nc.jetstream()
    info = await artifacts.object_info(js, ref.object_name)
    filename = _SAFE_FILENAME.sub("_", ref.name)
    headers = {
        "Content-Length": str(info.size or 0),
        # The content type comes from a page the worker visited: never let a browser render it on our origin.
        "Content-Disposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(ref.name)}",
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }
    return StreamingResponse(
        artifacts.iter_object(js, info, chunk_timeout=state.settings.rpc_timeout_seconds),
        media_type=ref.content_type or "application/octet-stream",
        headers=headers,
    )


# --- credentials ------------------------------------------------------------------------------------
@credentials_router.post(
    "",
    response_model=CredentialPublic,
    status_code=http.HTTP_201_CREATED,
    summary="Store (or replace) a credential; its value is never returned",
)
async def put_credential(
    body: CredentialCreate, principal: CredentialsWrite, rpc: RpcDep
) -> CredentialPublic:
    request = PutCredentialRequest(actor=principal.actor, credential=body)
    return await rpc.call(subjects.Vault.PUT_CREDENTIAL, request, CredentialPublic)


@credentials_router.get("", response_model=list[CredentialPublic], summary="List credentials (names only)")
async def list_credentials(principal: CredentialsRead, rpc: RpcDep) -> list[CredentialPublic]:
    return await rpc.call(
        subjects.Vault.LIST_CREDENTIALS, OrgScoped(actor=principal.actor), list[CredentialPublic]
    )


@credentials_router.delete(
    "/{name}", status_code=http.HTTP_204_NO_CONTENT, response_class=Response, summary="Delete a credential"
)
async def delete_credential(
    name: Annotated[str, Path(pattern=SECRET_NAME_PATTERN)], principal: CredentialsWrite, rpc: RpcDep
) -> Response:
    await rpc.call(subjects.Vault.DELETE_CREDENTIAL, NameRequest(actor=principal.actor, name=name), Any)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


# --- admin: webhooks and workers --------------------------------------------------------------------
@admin_router.post(
    "/webhooks",
    response_model=WebhookEndpointPublic,
    status_code=http.HTTP_201_CREATED,
    summary="Add a webhook endpoint; the signing secret is shown only in this answer",
)
async def create_webhook(
    body: WebhookEndpointCreate, principal: WebhooksAdmin, rpc: RpcDep
) -> WebhookEndpointPublic:
    request = CreateEndpointRequest(actor=principal.actor, endpoint=body)
    return await rpc.call(subjects.Webhooks.CREATE_ENDPOINT, request, WebhookEndpointPublic)


@admin_router.get("/webhooks", response_model=list[WebhookEndpointPublic], summary="List webhook endpoints")
async def list_webhooks(principal: WebhooksAdmin, rpc: RpcDep) -> list[WebhookEndpointPublic]:
    return await rpc.call(
        subjects.Webhooks.LIST_ENDPOINTS, OrgScoped(actor=principal.actor), list[WebhookEndpointPublic]
    )


@admin_router.get(
    "/webhooks/deliveries", response_model=list[WebhookDeliveryPublic], summary="The webhook delivery log"
)
async def list_deliveries(
    principal: WebhooksAdmin,
    rpc: RpcDep,
    endpoint_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[WebhookDeliveryPublic]:
    request = ListDeliveriesRequest(actor=principal.actor, endpoint_id=endpoint_id, limit=limit)
    return await rpc.call(subjects.Webhooks.LIST_DELIVERIES, request, list[WebhookDeliveryPublic])


@admin_router.delete(
    "/webhooks/{endpoint_id}",
    status_code=http.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a webhook endpoint",
)
async def delete_webhook(endpoint_id: IdPath, principal: WebhooksAdmin, rpc: RpcDep) -> Response:
    await rpc.call(subjects.Webhooks.DELETE_ENDPOINT, ById(actor=principal.actor, id=endpoint_id), Any)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@admin_router.post(
    "/workers/invite",
    response_model=InvitePublic,
    status_code=http.HTTP_201_CREATED,
    summary="Create a one-time invite code for a remote worker",
)
async def create_invite(
    principal: WorkersAdmin, rpc: RpcDep, body: Annotated[InviteCreate | None, Body()] = None
) -> InvitePublic:
    request = CreateInviteRequest(actor=principal.actor, invite=body or InviteCreate())
    return await rpc.call(subjects.Workers.CREATE_INVITE, request, InvitePublic)


@admin_router.get("/workers", response_model=list[WorkerPublic], summary="The organization's workers")
async def list_workers(principal: WorkersAdmin, rpc: RpcDep) -> list[WorkerPublic]:
    return await rpc.call(
        subjects.Workers.LIST, ListWorkersRequest(actor=principal.actor), list[WorkerPublic]
    )


@workers_router.post(
    "/register",
    response_model=RegisterReply,
    status_code=http.HTTP_201_CREATED,
    summary="Register a worker with an invite code; the worker key is shown only in this answer",
    dependencies=[Depends(public("the invite code is the credential"))],
)
async def register_worker(body: RegisterRequest, rpc: RpcDep) -> RegisterReply:
    # No JWT: the single-use invite code is the credential, checked by worker-gateway.
    return await rpc.call(subjects.Workers.REGISTER, body, RegisterReply)


# --- ops --------------------------------------------------------------------------------------------
class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: Literal["ready", "degraded"]
    checks: dict[str, Check]


@ops_router.get("/health", response_model=Liveness, summary="Liveness: the process answers")
async def health() -> Liveness:
    return Liveness()


@ops_router.get(
    "/health/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is down"}},
    summary="Readiness: NATS, the database and the auth service answer",
)
async def ready(request: Request) -> JSONResponse:
    state: GatewayState | None = getattr(request.app.state, "gateway", None)
    if state is None:
        checks = {n: Check(ok=False, detail="starting") for n in ("nats", "database", "auth")}
    else:
        budget = state.settings.health_timeout_seconds
        results = await asyncio.gather(
            _check(_check_nats(state), budget),
            _check(_check_database(state), budget),
            _check(_check_auth(state, budget), budget),
        )
        checks = dict(zip(("nats", "database", "auth"), results, strict=True))
    ok = all(c.ok for c in checks.values())
    body = Readiness(status="ready" if ok else "degraded", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


async def _check(probe: Any, budget: float) -> Check:
    try:
        result: Check = await asyncio.wait_for(probe, timeout=budget)
        return result
    except TimeoutError:
        return Check(ok=False, detail=f"no answer within {budget:g}s")
    except Exception as exc:  # a readiness probe reports failures, it never raises them
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}"[:200])


async def _check_nats(state: GatewayState) -> Check:
    nc = state.nc
    if nc is None:
        return Check(ok=False, detail="not connected")
    if nc.is_connected:
        return Check(ok=True, detail=f"connected to {nc.connected_url.netloc if nc.connected_url else '?'}")
    return Check(ok=False, detail="reconnecting" if nc.is_reconnecting else "disconnected")


async def _check_database(state: GatewayState) -> Check:
    url = state.settings.database_url
    if not url:
        return Check(ok=True, detail="not configured")
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    timeout = max(1, int(state.settings.health_timeout_seconds))
    async with await psycopg.AsyncConnection.connect(
        conninfo, connect_timeout=timeout, autocommit=True
    ) as conn:
        await conn.execute("SELECT 1")
    return Check(ok=True, detail="SELECT 1 ok")


async def _check_auth(state: GatewayState, budget: float) -> Check:
    assert state.rpc is not None
    jwks: Jwks = await state.rpc.call(subjects.Auth.JWKS, {}, Jwks, timeout=budget)
    if not jwks.keys:
        return Check(ok=False, detail="JWKS has no keys")
    return Check(ok=True, detail=f"JWKS has {len(jwks.keys)} key(s)")


@ops_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


ROUTERS = (auth_router, tasks_router, credentials_router, admin_router, workers_router, ops_router)
