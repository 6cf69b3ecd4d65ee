"""Artifact routes: the list of a task's artifacts. (The single-artifact download, which streams the bytes
from the object store, is `GET /api/v1/tasks/{task_id}/artifacts/{name}` in routes.py; which artifact it
serves is `find_artifact` here.)

The list comes from the task's own record (the scheduler stores the `ArtifactRef`s a worker reported, those of
every attempt), so it is org-scoped like the task: another org's task is a 404 here too. A retried task has
one artifact per name and attempt (a crashed attempt's `failure.png` and `trace.zip`, then the next one's);
a download takes `?attempt=N`, and serves the latest attempt's without it.

`resolve_upload_artifacts` checks, at submission, every upload step that takes a file from an artifact: the
task it names must be the caller's organization's (asked of the scheduler in the caller's scope, so another
org's task is simply not there), the artifact must exist, fit an upload and still be in the object store. The
attempt it found is written into the reference, so the worker reads exactly that object (and checks the org
stored with it once more).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated
from urllib.parse import quote

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.task_admin import ArtifactPublic
from browserfleet_contracts.tasks import (
    MAX_UPLOAD_BYTES,
    ArtifactRef,
    ArtifactSource,
    GetTaskRequest,
    IfStep,
    RepeatStep,
    Step,
    TaskCreate,
    TaskPublic,
    UploadStep,
    artifact_attempt,
)
from browserfleet_core.errors import Invalid, NotFound, ServiceError
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Query
from nats.js import JetStreamContext

from . import artifacts
from .deps import IdPath, RpcDep, TasksRead
from .errors import error_responses

_ERRORS = error_responses(401, 403, 404, 422, 429, 503)

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks", "artifacts"], responses=_ERRORS)


def _attempt_of(ref: ArtifactRef) -> int | None:
    return artifact_attempt(ref.object_name)


def _by_attempt(refs: Sequence[ArtifactRef]) -> list[ArtifactRef]:
    # stable: stored order within an attempt (the scheduler already stores them so; a row written before
    # it kept every attempt holds one attempt's)
    return sorted(refs, key=lambda ref: _attempt_of(ref) or 0)


def _latest(refs: Sequence[ArtifactRef]) -> ArtifactRef:
    """Of refs with one name: the latest attempt's (the last stored, should an attempt repeat a name)."""
    return _by_attempt(refs)[-1]


AttemptQuery = Annotated[
    int | None,
    Query(ge=1, description="which attempt's artifact (see the list); unset = the latest attempt's"),
]


def find_artifact(task: TaskPublic, name: str, attempt: int | None = None) -> ArtifactRef:
    """The artifact a download serves: `name` of `attempt`, or of the latest attempt that stored one."""
    named = [ref for ref in task.artifacts if ref.name == name]
    if not named:
        raise NotFound(f"task has no artifact named {name!r}", code="artifact_not_found", field="name")
    if attempt is None:
        return _latest(named)
    of_attempt = [ref for ref in named if _attempt_of(ref) == attempt]
    if not of_attempt:
        stored = sorted({a for a in map(_attempt_of, named) if a is not None})
        raise NotFound(
            f"attempt {attempt} of the task stored no artifact named {name!r}"
            + (f" (attempts that did: {', '.join(map(str, stored))})" if stored else ""),
            code="artifact_not_found",
            field="attempt",
        )
    return _latest(of_attempt)


def _url(task_id: str, ref: ArtifactRef) -> str:
    """The download of exactly this entry: with its attempt, so a later attempt does not change what it serves."""
    path = f"/api/v1/tasks/{task_id}/artifacts/{quote(ref.name, safe='')}"
    attempt = _attempt_of(ref)
    return path if attempt is None else f"{path}?attempt={attempt}"


def public_artifacts(task: TaskPublic) -> list[ArtifactPublic]:
    """Every attempt's artifacts, by attempt, then in the order the worker reported them."""
    return [
        ArtifactPublic(
            name=ref.name,
            content_type=ref.content_type or "application/octet-stream",
            size=ref.size,
            attempt=_attempt_of(ref),
            url=_url(task.id, ref),
        )
        for ref in _by_attempt(task.artifacts)
    ]


@router.get(
    "/{task_id}/artifacts",
    response_model=list[ArtifactPublic],
    summary="A task's artifacts (screenshots, PDFs, downloads, traces): name, type and size",
)
async def list_artifacts(task_id: IdPath, principal: TasksRead, rpc: RpcDep) -> list[ArtifactPublic]:
    task: TaskPublic = await rpc.call(
        subjects.Scheduler.GET_TASK, GetTaskRequest(actor=principal.actor, task_id=task_id), TaskPublic
    )
    return public_artifacts(task)


def _artifact_sources(steps: Sequence[Step], path: str) -> Iterator[tuple[str, ArtifactSource]]:
    """(field path, reference) of every upload-from-artifact, also inside `if` and `repeat`."""
    for i, step in enumerate(steps):
        here = f"{path}.{i}"
        if isinstance(step, UploadStep):
            for j, f in enumerate(step.files):
                if f.artifact is not None:
                    yield f"{here}.files.{j}.artifact", f.artifact
        elif isinstance(step, IfStep):
            yield from _artifact_sources(step.then, f"{here}.then")
            yield from _artifact_sources(step.otherwise, f"{here}.otherwise")
        elif isinstance(step, RepeatStep):
            yield from _artifact_sources(step.steps, f"{here}.steps")


async def resolve_upload_artifacts(
    rpc: RpcClient, js: JetStreamContext | None, actor: Actor, task: TaskCreate, prefix: str = ""
) -> None:
    """Checks every artifact an upload step names (see the module's docstring) and records its attempt;
    a bad reference is a 422 naming its field (`steps.2.files.0.artifact.task_id`)."""
    found: dict[str, TaskPublic | None] = {}
    for path, source in _artifact_sources(task.steps or [], f"{prefix}steps"):
        if source.task_id not in found:
            try:
                found[source.task_id] = await rpc.call(
                    subjects.Scheduler.GET_TASK,
                    GetTaskRequest(actor=actor, task_id=source.task_id),
                    TaskPublic,
                )
            except ServiceError as exc:
                if exc.status != 404:
                    raise
                found[source.task_id] = None  # another org's task is exactly as absent as a missing one
        earlier = found[source.task_id]
        if earlier is None:
            raise Invalid(
                f"{path}.task_id: task {source.task_id} not found",
                field=f"{path}.task_id",
                code="artifact_not_found",
            )
        refs = [
            r
            for r in earlier.artifacts
            if r.name == source.name and (source.attempt is None or _attempt_of(r) == source.attempt)
        ]
        if not refs:
            which = f" of attempt {source.attempt}" if source.attempt is not None else ""
            raise Invalid(
                f"{path}.name: task {source.task_id} has no artifact named {source.name!r}{which}",
                field=f"{path}.attempt" if source.attempt is not None else f"{path}.name",
                code="artifact_not_found",
            )
        ref = _latest(refs)
        if ref.size > MAX_UPLOAD_BYTES:
            raise Invalid(
                f"{path}.name: artifact {source.name!r} is {ref.size} bytes; an upload takes at most "
                f"{MAX_UPLOAD_BYTES}",
                field=f"{path}.name",
                code="artifact_too_large",
            )
        if js is not None:
            try:
                await artifacts.object_info(js, ref.object_name)
            except NotFound:
                raise Invalid(
                    f"{path}.name: artifact {source.name!r} of task {source.task_id} is no longer stored "
                    "(past the retention period)",
                    field=f"{path}.name",
                    code="artifact_expired",
                ) from None
        source.attempt = _attempt_of(ref)
