"""Task intake, shared by task submission and schedules: what a task names must exist in the caller's
organization before it is accepted. Every secret (`{{ secrets.NAME }}`, `secrets`, `agent.api_key_secret`)
must be in the vault; every artifact an upload step takes must be found. A 422 names the field.

An upload-from-artifact reference is checked at submission: the task it names must be the caller's
organization's (asked of the scheduler in the caller's scope, so another org's task is simply not there), the
artifact must exist, fit an upload and still be in the object store. The attempt it found is written into the
reference, so the worker reads exactly that object (and checks the org stored with it once more).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor
from browserfleet_contracts.steps import (
    MAX_UPLOAD_BYTES,
    ArtifactSource,
    IfStep,
    RepeatStep,
    Step,
    UploadStep,
)
from browserfleet_contracts.tasks import CreateTaskRequest, GetTaskRequest, TaskCreate, TaskPublic
from browserfleet_contracts.vault import CheckNamesReply, CheckNamesRequest
from browserfleet_core.errors import Invalid, NotFound, ServiceError
from browserfleet_core.messaging import RpcClient
from nats.js import JetStreamContext

from . import artifacts


async def missing_secrets(rpc: RpcClient, actor: Actor, names: Iterable[str]) -> list[str]:
    """The names the vault does not hold in the actor's organization, sorted (the vault is not asked for none)."""
    wanted = sorted(names)
    if not wanted:
        return []
    reply: CheckNamesReply = await rpc.call(
        endpoints.Vault.CHECK_NAMES, CheckNamesRequest(actor=actor, names=wanted)
    )
    return sorted(reply.missing)


async def check_task_references(
    rpc: RpcClient, js: JetStreamContext | None, actor: Actor, task: TaskCreate, prefix: str = ""
) -> None:
    """Every secret and upload artifact `task` names (see the module's docstring); `prefix` is where the task
    sits in the client's body (`task.` in a schedule), so the 422 names the client's field."""
    missing = await missing_secrets(rpc, actor, task.spec().secret_names())
    if missing:
        key = task.agent.api_key_secret if task.agent is not None else None
        if key is not None and missing == [key]:
            field = f"{prefix}agent.api_key_secret"
        else:
            field = f"{prefix}steps" if task.kind == "steps" else f"{prefix}goal"
        raise Invalid(f"unknown secret(s): {', '.join(missing)}", field=field, code="unknown_secret")
    await resolve_upload_artifacts(rpc, js, actor, task, prefix)


async def check_template(rpc: RpcClient, actor: Actor, task: TaskCreate, prefix: str) -> None:
    """Every `{{ secrets.NAME }}` (and artifact) of a schedule's template must exist now, or every tick would
    fail."""
    await check_task_references(rpc, None, actor, task, prefix)


async def submit(
    rpc: RpcClient,
    js: JetStreamContext | None,
    actor: Actor,
    task: TaskCreate,
    idempotency_key: str | None,
) -> TaskPublic:
    """Checks what the task names, then asks the scheduler to create it (same `idempotency_key` and body,
    same task; the key with another body is a 409). The body is fingerprinted as the client sent it, before
    the checks fill in what an upload's artifact reference resolves to."""
    body_hash = task.fingerprint() if idempotency_key is not None else None
    await check_task_references(rpc, js, actor, task)
    return await rpc.call(
        endpoints.Scheduler.CREATE_TASK,
        CreateTaskRequest(actor=actor, task=task, idempotency_key=idempotency_key, body_hash=body_hash),
    )


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
                source_task = await rpc.call(
                    endpoints.Scheduler.GET_TASK, GetTaskRequest(actor=actor, task_id=source.task_id)
                )
                found[source.task_id] = source_task
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
            if r.name == source.name and (source.attempt is None or artifacts.attempt_of(r) == source.attempt)
        ]
        if not refs:
            which = f" of attempt {source.attempt}" if source.attempt is not None else ""
            raise Invalid(
                f"{path}.name: task {source.task_id} has no artifact named {source.name!r}{which}",
                field=f"{path}.attempt" if source.attempt is not None else f"{path}.name",
                code="artifact_not_found",
            )
        ref = artifacts.latest(refs)
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
        source.attempt = artifacts.attempt_of(ref)
