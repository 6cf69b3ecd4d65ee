"""A task's log lines: a page after a cursor, or followed live as Server-Sent Events.

`GET /admin/tasks/{id}/logs?follow=true` answers `text/event-stream`. Each stored line is one event
(`event: log`, `id:` = the line's id, `data:` = the line as JSON); when the task is terminal and every line has
been sent, one `event: end` closes the stream. A reconnecting client sends `Last-Event-ID` (browsers'
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
from typing import Annotated, Any

from browserfleet_contracts import endpoints
from browserfleet_contracts.task_admin import ListTaskLogsRequest, TaskLogPage
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from ..deps import IdPath, RpcDep, TasksRead
from ..errors import API_ERRORS

LOG_FOLLOW_POLL_SECONDS = 0.5
LOG_FOLLOW_KEEPALIVE_SECONDS = 15.0
LOG_FOLLOW_MAX_SECONDS = 3600.0

router = APIRouter(prefix="/admin/tasks", tags=["admin", "tasks"], responses=API_ERRORS)


@router.get(
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
    page: TaskLogPage = await rpc.call(endpoints.Scheduler.TASK_LOGS, request)
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
        page = await rpc.call(endpoints.Scheduler.TASK_LOGS, request)
