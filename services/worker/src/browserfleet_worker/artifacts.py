"""Artifacts (browserfleet_contracts.artifacts): a task's files stored under `<task_id>/<attempt>/<name>`, and
an earlier task's artifact read back for an `upload` step of the same organization only.

The worker's bus identity may send an artifact's chunks into the object store and nothing more: worker-gateway
writes the metadata that makes them the attempt's artifact once it has checked that this worker holds the
attempt, and it hands out an earlier artifact chunk by chunk after checking the organization."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.artifacts import (
    CHUNK_SIZE,
    ArtifactChunk,
    ArtifactCommitRequest,
    ArtifactReadRequest,
)
from browserfleet_contracts.steps import MAX_UPLOAD_BYTES, ArtifactSource
from browserfleet_contracts.tasks import ArtifactRef, TaskDispatch
from browserfleet_core.errors import NotFound, ServiceError
from browserfleet_core.messaging import RpcClient
from nats.js import JetStreamContext

from .steps import Artifact, StepError, StepsOutcome

log = logging.getLogger(__name__)


async def put_artifact(
    js: JetStreamContext, rpc: RpcClient, worker_key: str, task: TaskDispatch, artifact: Artifact
) -> ArtifactRef:
    """The chunks on `$O.artifacts.C.<nuid>` (each acknowledged by JetStream), then the commit."""
    nuid = secrets.token_hex(11)
    digest = hashlib.sha256()
    data = artifact.data
    chunks = 0
    for start in range(0, len(data), CHUNK_SIZE):
        chunk = data[start : start + CHUNK_SIZE]
        digest.update(chunk)
        await js.publish(f"$O.{subjects.ARTIFACTS_BUCKET}.C.{nuid}", chunk)
        chunks += 1
    ref: ArtifactRef = await rpc.call(
        endpoints.Workers.COMMIT_ARTIFACT,
        ArtifactCommitRequest(
            worker_key=worker_key,
            task_id=task.task_id,
            attempt=task.attempt,
            name=artifact.name,
            content_type=artifact.content_type,
            nuid=nuid,
            size=len(data),
            chunks=chunks,
            digest="SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode(),
        ),
    )
    return ref


async def store_each(
    outcome: StepsOutcome,
    task_id: str,
    store: Callable[[Artifact], Awaitable[ArtifactRef]],
    errors: tuple[type[Exception], ...] = (Exception,),
) -> list[ArtifactRef]:
    """The outcome's artifacts, each stored by `store`; one that cannot be (it raises one of `errors`) fails
    a completed outcome. A local worker stores into the object store, a remote one over its socket."""
    refs: list[ArtifactRef] = []
    for artifact in outcome.artifacts:
        try:
            refs.append(await store(artifact))
        except errors as exc:
            log.warning("storing artifact %s of %s failed: %s", artifact.name, task_id, exc)
            if outcome.status == "completed":
                outcome.status = "failed"
                outcome.error_message = f"storing artifact {artifact.name} failed"
    return refs


async def store_artifacts(
    js: JetStreamContext, rpc: RpcClient, worker_key: str, task: TaskDispatch, outcome: StepsOutcome
) -> list[ArtifactRef]:
    """The outcome's artifacts, stored; one that cannot be stored fails a completed outcome."""
    return await store_each(outcome, task.task_id, lambda a: put_artifact(js, rpc, worker_key, task, a))


async def read_artifact(
    rpc: RpcClient, worker_key: str, task: TaskDispatch, source: ArtifactSource
) -> tuple[bytes, str]:
    """An earlier task's artifact for an upload step: only one stored by a task of the same organization
    (another org's looks exactly like a missing one), at most MAX_UPLOAD_BYTES."""
    label = f"artifact {source.name!r} of task {source.task_id}"
    if source.attempt is None:  # the gateway records the attempt when it checks the reference
        raise StepError(f"{label}: the reference names no attempt")
    data = bytearray()
    index, after = 0, 0
    content_type = "application/octet-stream"
    while True:
        request = ArtifactReadRequest(
            worker_key=worker_key,
            task_id=task.task_id,
            attempt=task.attempt,
            source=source,
            index=index,
            after=after,
        )
        try:
            chunk: ArtifactChunk = await rpc.call(endpoints.Workers.READ_ARTIFACT, request)
        except ServiceError as exc:
            if exc.status == NotFound.status:  # another organization's looks the same
                raise StepError(f"{label} not found (it may have expired)") from None
            raise StepError(f"{label}: reading it failed ({exc.message})") from None
        content_type = chunk.content_type
        data += chunk.data
        if max(chunk.size, len(data)) > MAX_UPLOAD_BYTES:  # worker-gateway says so too; or replaced meanwhile
            size = max(chunk.size, len(data))
            raise StepError(f"{label} is {size} bytes; an upload takes at most {MAX_UPLOAD_BYTES}")
        if chunk.next_after is None:
            return bytes(data), content_type
        index, after = index + 1, chunk.next_after
