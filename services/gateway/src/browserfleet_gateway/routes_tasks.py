"""Task lifecycle routes (issue 4): cancel, the admin task list, attempts, logs (paged or followed as
Server-Sent Events) and cron schedules.

Thin like routes.py: authenticate, build the contract request with the caller's `Actor`, call the scheduler.
The scheduler scopes every query by the actor's org, so another org's task or schedule is a 404.

Following logs: `GET /admin/tasks/{id}/logs?follow=true` answers `text/event-stream`. Each stored line is one
event (`event: log`, `id:` = the line's id, `data:` = the line as JSON); when the task is terminal and every
line has been sent, one `event: end` closes the stream. A reconnecting client sends `Last-Event-ID` (browsers'
EventSource do it themselves) and continues after that line, so nothing is lost or repeated. We chose SSE over
long polling because a log follower is one long read, EventSource reconnects with the cursor for free, and
`curl -N` shows it as it comes. The gateway polls the scheduler's paged query (`since` cursor) every
`LOG_FOLLOW_POLL_SECONDS` while the task runs; one stream lasts at most `LOG_FOLLOW_MAX_SECONDS`, after which the
client reconnects with its cursor.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Ack, Actor, ById, Page
from browserfleet_contracts.schedules import (
    CreateScheduleRequest,
    ListSchedulesRequest,
    ScheduleCreate,
    SchedulePublic,
    ScheduleUpdate,
    UpdateScheduleRequest,
)
from browserfleet_contracts.task_admin import (
    AdminListTasksRequest,
    CancelTaskRequest,
    GetTaskAttemptsRequest,
    ListTaskLogsRequest,
    TaskAttemptPublic,
    TaskLogPage,
)
from browserfleet_contracts.tasks import (
    WORKER_TAG_PATTERN,
    GetTaskRequest,
    Priority,
    TaskCreate,
    TaskPublic,
    TaskStatus,
)
from browserfleet_contracts.vault import CheckNamesReply, CheckNamesRequest
from browserfleet_core.errors import Invalid, ServiceError
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import StreamingResponse
from nats.js import JetStreamContext
from starlette import status as http

from .deps import IdPath, Principal, RpcDep, TasksRead, TasksWrite, access
from .errors import error_responses
from .routes_artifacts import resolve_upload_artifacts

_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)

# Who may call what. Viewers read; cancelling needs `user`; schedules are changed by admins (the scheduler
# checks that too), and an API key acts with the rule's role for the one call.
SchedulesWrite = Annotated[Principal, Depends(access("admin", scope="tasks:write"))]

LOG_FOLLOW_POLL_SECONDS = 0.5
LOG_FOLLOW_KEEPALIVE_SECONDS = 15.0
LOG_FOLLOW_MAX_SECONDS = 3600.0

api_router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], responses=_ERRORS)
admin_router = APIRouter(prefix="/admin/tasks", tags=["admin", "tasks"], responses=_ERRORS)
schedules_router = APIRouter(prefix="/admin/schedules", tags=["admin", "schedules"], responses=_ERRORS)

_Reason = Annotated[str | None, Query(max_length=500, description="recorded on the task")]


# --- cancel -----------------------------------------------------------------------------------------
async def _cancel(rpc: RpcClient, actor: Actor, task_id: str, reason: str | None) -> TaskPublic:
    request = CancelTaskRequest(actor=actor, task_id=task_id, reason=reason)
    return await rpc.call(subjects.Scheduler.CANCEL_TASK, request, TaskPublic)


_CANCEL_DOC = (
    "A queued task is cancelled at once; a running one is marked cancelled at once and its worker is told to "
    "close the browser context. A finished task is a 409."
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


@admin_router.delete(
    "/{task_id}", response_model=TaskPublic, summary="Cancel a task (admin path)", description=_CANCEL_DOC
)
async def admin_cancel_task(
    task_id: IdPath, principal: TasksWrite, rpc: RpcDep, reason: _Reason = None
) -> TaskPublic:
    return await _cancel(rpc, principal.actor, task_id, reason)


# --- admin list, one task, attempts, logs ----------------------------------------------------------
@admin_router.get(
    "",
    response_model=Page[TaskPublic],
    summary="The organization's tasks, newest first, with filters and a cursor",
)
async def admin_list_tasks(
    principal: TasksRead,
    rpc: RpcDep,
    status: TaskStatus | None = None,
    priority: Priority | None = None,
    worker: Annotated[str | None, Query(max_length=64, description="worker id")] = None,
    tag: Annotated[str | None, Query(pattern=WORKER_TAG_PATTERN, description="a worker tag")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[TaskPublic]:
    request = AdminListTasksRequest(
        actor=principal.actor,
        status=status,
        priority=priority,
        worker_id=worker,
        tag=tag,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
    )
    return await rpc.call(subjects.Scheduler.ADMIN_LIST_TASKS, request, Page[TaskPublic])


@admin_router.get("/{task_id}", response_model=TaskPublic, summary="One task, with its result")
async def admin_get_task(task_id: IdPath, principal: TasksRead, rpc: RpcDep) -> TaskPublic:
    request = GetTaskRequest(actor=principal.actor, task_id=task_id)
    return await rpc.call(subjects.Scheduler.GET_TASK, request, TaskPublic)


@admin_router.get(
    "/{task_id}/attempts",
    response_model=list[TaskAttemptPublic],
    summary="A task's attempts: worker, start, end, outcome",
)
async def task_attempts(task_id: IdPath, principal: TasksRead, rpc: RpcDep) -> list[TaskAttemptPublic]:
    request = GetTaskAttemptsRequest(actor=principal.actor, task_id=task_id)
    return await rpc.call(subjects.Scheduler.TASK_ATTEMPTS, request, list[TaskAttemptPublic])


@admin_router.get(
    "/{task_id}/logs",
    response_model=TaskLogPage,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "a page of log lines; with `follow=true` a Server-Sent Events stream "
            "(`event: log` per line with `id:` = the line id, then one `event: end`)",
        }
    },
    summary="A task's log lines: a page after `since`, or followed live with `follow=true` (SSE)",
)
async def task_logs(
    task_id: IdPath,
    principal: TasksRead,
    rpc: RpcDep,
    since: Annotated[int, Query(ge=0, description="only lines after this id (the `next_since` cursor)")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    follow: Annotated[bool, Query(description="stream new lines as SSE until the task is terminal")] = False,
    last_event_id: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, description="SSE reconnect cursor; wins over `since`")
    ] = None,
) -> Any:
    if follow and last_event_id is not None:
        since = last_event_id
    request = ListTaskLogsRequest(actor=principal.actor, task_id=task_id, since=since, limit=limit)
    # the first page is fetched before answering: another org's task is a plain 404, never an empty stream
    page: TaskLogPage = await rpc.call(subjects.Scheduler.TASK_LOGS, request, TaskLogPage)
    if not follow:
        return page
    return StreamingResponse(
        _follow(rpc, request, page),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: str, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


async def _follow(rpc: RpcClient, request: ListTaskLogsRequest, page: TaskLogPage) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    started = quiet_since = loop.time()
    yield b"retry: 2000\n\n"
    while True:
        for line in page.items:
            yield _sse("log", line.model_dump_json(), line.id)
        if page.items:
            quiet_since = loop.time()
        if page.finished and not page.items:
            yield _sse("end", json.dumps({"next_since": page.next_since, "finished": True}))
            return
        if loop.time() - started > LOG_FOLLOW_MAX_SECONDS:
            yield _sse("end", json.dumps({"next_since": page.next_since, "finished": False}))
            return
        if not page.items:
            if loop.time() - quiet_since > LOG_FOLLOW_KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                quiet_since = loop.time()
            await asyncio.sleep(LOG_FOLLOW_POLL_SECONDS)
        request = request.model_copy(update={"since": page.next_since})
        page = await rpc.call(subjects.Scheduler.TASK_LOGS, request, TaskLogPage)


# --- schedules ------------------------------------------------------------------------------------
async def check_task_references(
    rpc: RpcClient, js: JetStreamContext | None, actor: Actor, task: TaskCreate, prefix: str = ""
) -> None:
    """What a task names must exist in the caller's organization before it is accepted: every secret
    (`{{ secrets.NAME }}`, `secrets`, `agent.api_key_secret`) in the vault, every artifact an upload step
    takes (routes_artifacts.resolve_upload_artifacts). A 422 names the field."""
    names = task.spec().secret_names()
    if names:
        reply: CheckNamesReply = await rpc.call(
            subjects.Vault.CHECK_NAMES, CheckNamesRequest(actor=actor, names=sorted(names)), CheckNamesReply
        )
        if reply.missing:
            key = task.agent.api_key_secret if task.agent is not None else None
            if key is not None and reply.missing == [key]:
                field = f"{prefix}agent.api_key_secret"
            else:
                field = f"{prefix}steps" if task.kind == "steps" else f"{prefix}goal"
            raise Invalid(
                f"unknown secret(s): {', '.join(sorted(reply.missing))}", field=field, code="unknown_secret"
            )
    await resolve_upload_artifacts(rpc, js, actor, task, prefix)


async def _check_secrets(rpc: RpcClient, actor: Actor, task: TaskCreate, prefix: str) -> None:
    """Every `{{ secrets.NAME }}` (and artifact) of a template must exist now, or every tick would fail."""
    await check_task_references(rpc, None, actor, task, prefix)


async def _scheduler(rpc: RpcClient, subject: str, request: Any) -> SchedulePublic:
    """The scheduler names fields of its request (`schedule.cron`); the client sent the schedule itself."""
    try:
        return await rpc.call(subject, request, SchedulePublic)
    except ServiceError as exc:
        if exc.field and exc.field.startswith("schedule."):
            exc.field = exc.field.removeprefix("schedule.")
            exc.message = exc.message.replace("schedule.", "", 1)
        raise


@schedules_router.post(
    "",
    response_model=SchedulePublic,
    status_code=http.HTTP_201_CREATED,
    summary="Create a cron schedule that creates a task from `task` at every tick",
)
async def create_schedule(
    body: ScheduleCreate, principal: SchedulesWrite, rpc: RpcDep, response: Response
) -> SchedulePublic:
    await _check_secrets(rpc, principal.actor, body.task, "task.")
    created = await _scheduler(
        rpc, subjects.Scheduler.CREATE_SCHEDULE, CreateScheduleRequest(actor=principal.actor, schedule=body)
    )
    response.headers["Location"] = f"/admin/schedules/{created.id}"
    return created


@schedules_router.get("", response_model=list[SchedulePublic], summary="The organization's schedules")
async def list_schedules(principal: TasksRead, rpc: RpcDep) -> list[SchedulePublic]:
    return await rpc.call(
        subjects.Scheduler.LIST_SCHEDULES, ListSchedulesRequest(actor=principal.actor), list[SchedulePublic]
    )


@schedules_router.get("/{schedule_id}", response_model=SchedulePublic, summary="One schedule")
async def get_schedule(schedule_id: IdPath, principal: TasksRead, rpc: RpcDep) -> SchedulePublic:
    return await _scheduler(rpc, subjects.Scheduler.GET_SCHEDULE, ById(actor=principal.actor, id=schedule_id))


async def _update(rpc: RpcClient, actor: Actor, schedule_id: str, body: ScheduleUpdate) -> SchedulePublic:
    request = UpdateScheduleRequest(actor=actor, id=schedule_id, schedule=body)
    return await _scheduler(rpc, subjects.Scheduler.UPDATE_SCHEDULE, request)


@schedules_router.put(
    "/{schedule_id}",
    response_model=SchedulePublic,
    summary="Change a schedule; the fields given replace the stored ones",
)
async def update_schedule(
    schedule_id: IdPath, body: ScheduleUpdate, principal: SchedulesWrite, rpc: RpcDep
) -> SchedulePublic:
    if body.task is not None:
        await _check_secrets(rpc, principal.actor, body.task, "task.")
    return await _update(rpc, principal.actor, schedule_id, body)


@schedules_router.post(
    "/{schedule_id}/pause", response_model=SchedulePublic, summary="Pause a schedule: no ticks fire"
)
async def pause_schedule(schedule_id: IdPath, principal: SchedulesWrite, rpc: RpcDep) -> SchedulePublic:
    return await _update(rpc, principal.actor, schedule_id, ScheduleUpdate(paused=True))


@schedules_router.post(
    "/{schedule_id}/resume",
    response_model=SchedulePublic,
    summary="Resume a schedule from its next future tick (missed ticks are not fired)",
)
async def resume_schedule(schedule_id: IdPath, principal: SchedulesWrite, rpc: RpcDep) -> SchedulePublic:
    return await _update(rpc, principal.actor, schedule_id, ScheduleUpdate(paused=False))


@schedules_router.delete(
    "/{schedule_id}",
    status_code=http.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a schedule (tasks it already created stay)",
)
async def delete_schedule(schedule_id: IdPath, principal: SchedulesWrite, rpc: RpcDep) -> Response:
    await rpc.call(subjects.Scheduler.DELETE_SCHEDULE, ById(actor=principal.actor, id=schedule_id), Ack)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


ROUTERS = (api_router, admin_router, schedules_router)
