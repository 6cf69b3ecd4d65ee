"""A task's artifacts: the list (every attempt's) and the download of one, streamed from the object store.

Both read the task's own record through the scheduler, so they are org-scoped like the task: another org's task
is a 404 here too. Which artifact a download serves is `browserfleet_gateway.artifacts.find_artifact`.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor
from browserfleet_contracts.task_admin import ArtifactPublic
from browserfleet_contracts.tasks import GetTaskRequest, TaskPublic
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from .. import artifacts
from ..deps import IdPath, RpcDep, StateDep, TasksRead
from ..errors import API_ERRORS, error_responses

# The list and the download were written apart and document different tags and errors; the API keeps them.
router = APIRouter(prefix="/api/v1/tasks")

AttemptQuery = Annotated[
    int | None,
    Query(ge=1, description="which attempt's artifact (see the list); unset = the latest attempt's"),
]
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9_.-]")


async def _task(rpc: RpcClient, actor: Actor, task_id: str) -> TaskPublic:
    return await rpc.call(endpoints.Scheduler.GET_TASK, GetTaskRequest(actor=actor, task_id=task_id))


@router.get(
    "/{task_id}/artifacts",
    response_model=list[ArtifactPublic],
    tags=["tasks", "artifacts"],
    responses=error_responses(401, 403, 404, 422, 429, 503),
    summary="A task's artifacts (screenshots, PDFs, downloads, traces): name, type and size",
)
async def list_artifacts(task_id: IdPath, principal: TasksRead, rpc: RpcDep) -> list[ArtifactPublic]:
    return artifacts.public_artifacts(await _task(rpc, principal.actor, task_id))


@router.get(
    "/{task_id}/artifacts/{name}",
    response_class=StreamingResponse,
    tags=["tasks"],
    responses={
        **API_ERRORS,
        200: {"content": {"application/octet-stream": {}}, "description": "the artifact's bytes"},
    },
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
    task = await _task(rpc, principal.actor, task_id)
    ref = artifacts.find_artifact(task, name, attempt)
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
