"""Artifact routes: the list of a task's artifacts. (The single-artifact download, which streams the bytes
from the object store, is `GET /api/v1/tasks/{task_id}/artifacts/{name}` in routes.py.)

The list comes from the task's own record (the scheduler stores the `ArtifactRef`s a worker reported), so it is
org-scoped like the task: another org's task is a 404 here too.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from browserfleet_contracts import subjects
from browserfleet_contracts.task_admin import ArtifactPublic
from browserfleet_contracts.tasks import ArtifactRef, GetTaskRequest, TaskPublic
from fastapi import APIRouter, Depends, Path

from .deps import Principal, RpcDep, access
from .errors import ErrorResponse

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 422, 429, 503)
}
_ID = Annotated[str, Path(min_length=1, max_length=64)]
TasksRead = Annotated[Principal, Depends(access("viewer", scope="tasks:read"))]

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks", "artifacts"], responses=_ERRORS)


def _attempt_of(ref: ArtifactRef) -> int | None:
    parts = ref.object_name.split("/")  # <task_id>/<attempt>/<name>
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def public_artifacts(task: TaskPublic) -> list[ArtifactPublic]:
    """One entry per name, the latest attempt's (the one the download route serves), in stored order."""
    latest: dict[str, ArtifactRef] = {}
    for ref in task.artifacts:
        latest.pop(ref.name, None)
        latest[ref.name] = ref
    return [
        ArtifactPublic(
            name=ref.name,
            content_type=ref.content_type or "application/octet-stream",
            size=ref.size,
            attempt=_attempt_of(ref),
            url=f"/api/v1/tasks/{task.id}/artifacts/{quote(ref.name, safe='')}",
        )
        for ref in latest.values()
    ]


@router.get(
    "/{task_id}/artifacts",
    response_model=list[ArtifactPublic],
    summary="A task's artifacts (screenshots, PDFs, downloads, traces): name, type and size",
)
async def list_artifacts(task_id: _ID, principal: TasksRead, rpc: RpcDep) -> list[ArtifactPublic]:
    task: TaskPublic = await rpc.call(
        subjects.Scheduler.GET_TASK, GetTaskRequest(actor=principal.actor, task_id=task_id), TaskPublic
    )
    return public_artifacts(task)
