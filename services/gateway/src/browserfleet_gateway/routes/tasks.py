"""Tasks: submit, list, read and cancel them (`/api/v1/tasks`), and the admin view of them (`/admin/tasks`)
with filters and attempts.

The scheduler scopes every query by the actor's org, so another org's task is a 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor, Page
from browserfleet_contracts.task_admin import AdminListTasksRequest, CancelTaskRequest
from browserfleet_contracts.tasks import (
    WORKER_TAG_PATTERN,
    ListTasksRequest,
    Priority,
    TaskCreate,
    TaskPublic,
    TaskStatus,
)
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Header, Query, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette import status as http

from .. import hotcreate, intake
from ..deps import IdPath, RpcDep, StateDep, TasksRead, TasksWrite
from ..errors import API_ERRORS
from ..replies import hot_read_route, rpc_route

api_router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], responses=API_ERRORS)
admin_router = APIRouter(prefix="/admin/tasks", tags=["admin", "tasks"], responses=API_ERRORS)

# a page of tasks, in either list
_Limit = Annotated[int, Query(ge=1, le=500)]
_Cursor = Annotated[str | None, Query(max_length=200)]
_Reason = Annotated[str | None, Query(max_length=500, description="recorded on the task")]
_CANCEL_DOC = (
    "A queued task is cancelled at once; a running one is marked cancelled at once and its worker is told to "
    "close the browser context. A finished task is a 409."
)


async def _cancel(rpc: RpcClient, actor: Actor, task_id: str, reason: str | None) -> TaskPublic:
    request = CancelTaskRequest(actor=actor, task_id=task_id, reason=reason)
    return await rpc.call(endpoints.Scheduler.CANCEL_TASK, request)


_IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="same key and body, same task: retries are safe; the key with another body is a 409",
    ),
]
_CREATE_DOC = (
    "Steps (`steps`), or a natural-language goal (`goal`, or the seed's `task`) for the agent; `worker_tags` "
    "route it to workers with those tags; its events also go to `webhook_url`, signed with the organization's "
    "secret. With an `Idempotency-Key`, the same request again answers the first task."
)


def _add_submit_route(router: APIRouter, *, name: str, summary: str) -> None:
    """`POST` at the router's prefix: submit a task, its `Location` under that prefix. One handler for both
    prefixes; `name` keeps each operation id (and audit action) its own."""

    async def submit(
        body: TaskCreate,
        principal: TasksWrite,
        rpc: RpcDep,
        state: StateDep,
        response: Response,
        idempotency_key: _IdempotencyKey = None,
    ) -> TaskPublic:
        js = state.nc.jetstream() if state.nc is not None else None
        task = await intake.submit(rpc, js, principal.actor, body, idempotency_key)
        response.headers["Location"] = f"{router.prefix}/{task.id}"
        return task

    router.add_api_route(
        "",
        submit,
        methods=["POST"],
        name=name,
        response_model=TaskPublic,
        status_code=http.HTTP_201_CREATED,
        summary=summary,
        description=_CREATE_DOC,
    )
    route = router.routes[-1]
    assert isinstance(route, APIRoute)
    # `hotcreate` serves it too, with this route's fields and rule; what `submit` does it does after them
    # (test_hot_create compares the two answer by answer)
    hotcreate.declare(route, router.prefix)


# --- /api/v1/tasks ----------------------------------------------------------------------------------
_add_submit_route(api_router, name="create_task", summary="Submit a task")


@api_router.get("", response_model=Page[TaskPublic], summary="List the organization's tasks, newest first")
async def list_tasks(
    principal: TasksRead,
    rpc: RpcDep,
    status: TaskStatus | None = None,
    limit: _Limit = 50,
    cursor: _Cursor = None,
) -> Page[TaskPublic]:
    request = ListTasksRequest(actor=principal.actor, status=status, limit=limit, cursor=cursor)
    return await rpc.call(endpoints.Scheduler.LIST_TASKS, request)


hot_read_route(
    api_router,
    "/{task_id}",
    endpoints.Scheduler.GET_TASK,
    TasksRead,
    name="get_task",
    summary="One task, with its result",
)


@api_router.post(
    "/{task_id}/cancel",
    response_model=TaskPublic,
    summary="Cancel a task",
    description=_CANCEL_DOC,
)
async def cancel_task(
    task_id: IdPath, principal: TasksWrite, rpc: RpcDep, reason: _Reason = None
) -> TaskPublic:
    return await _cancel(rpc, principal.actor, task_id, reason)


# --- /admin/tasks -----------------------------------------------------------------------------------
_add_submit_route(
    admin_router,
    name="admin_create_task",
    summary="Create a task (the seed's path; the same as POST /api/v1/tasks)",
)


@admin_router.delete(
    "/{task_id}", response_model=TaskPublic, summary="Cancel a task (admin path)", description=_CANCEL_DOC
)
async def admin_cancel_task(
    task_id: IdPath, principal: TasksWrite, rpc: RpcDep, reason: _Reason = None
) -> TaskPublic:
    return await _cancel(rpc, principal.actor, task_id, reason)


class _AdminQuery(BaseModel):
    """The admin list's filters and page, named as the scheduler's request names them."""

    status: TaskStatus | None = None
    priority: Priority | None = None
    worker_id: Annotated[str | None, Query(alias="worker", max_length=64, description="worker id")] = None
    tag: Annotated[str | None, Query(pattern=WORKER_TAG_PATTERN, description="a worker tag")] = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: _Limit = 50
    cursor: _Cursor = None


@admin_router.get(
    "",
    response_model=Page[TaskPublic],
    summary="The organization's tasks, newest first, with filters and a cursor",
)
async def admin_list_tasks(
    principal: TasksRead, rpc: RpcDep, query: Annotated[_AdminQuery, Query()]
) -> Page[TaskPublic]:
    request = AdminListTasksRequest(actor=principal.actor, **query.model_dump())
    return await rpc.call(endpoints.Scheduler.ADMIN_LIST_TASKS, request)


hot_read_route(
    admin_router,
    "/{task_id}",
    endpoints.Scheduler.GET_TASK,
    TasksRead,
    name="admin_get_task",
    summary="One task, with its result",
)
rpc_route(
    admin_router,
    "GET",
    "/{task_id}/attempts",
    endpoints.Scheduler.TASK_ATTEMPTS,
    TasksRead,
    name="task_attempts",
    summary="A task's attempts: worker, start, end, outcome",
)
