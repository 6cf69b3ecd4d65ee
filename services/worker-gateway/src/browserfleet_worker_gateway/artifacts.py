"""A worker's artifacts (browserfleet_contracts.artifacts): the metadata of what it stored, written once the
worker is known to hold the running attempt (the scheduler's claim info), and the chunks of an earlier
artifact of the same organization for an upload step. The worker's bus identity can send chunks and nothing
else of the object store, so neither another task's artifact nor another organization's can be touched."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.artifacts import (
    ORG_HEADER,
    ArtifactChunk,
    ArtifactCommitRequest,
    ArtifactReadRequest,
)
from browserfleet_contracts.steps import MAX_UPLOAD_BYTES
from browserfleet_contracts.tasks import ArtifactRef, ClaimInfo, ClaimInfoRequest, artifact_object_name
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.errors import Forbidden, Invalid, NotFound
from browserfleet_core.messaging import RpcClient, rpc_router
from browserfleet_core.streams import ARTIFACTS_STREAM
from faststream.nats import NatsRouter
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectMetaOptions
from nats.js.errors import NotFoundError

from . import registration
from .runtime import WorkerGatewayRuntime

BUCKET = subjects.ARTIFACTS_BUCKET
ROLLUP = {"Nats-Rollup": "sub"}  # a meta message replaces the object's previous one
NOT_HELD = "this worker does not hold that attempt"


def chunk_subject(nuid: str) -> str:
    return f"$O.{BUCKET}.C.{nuid}"


def meta_subject(object_name: str) -> str:
    return f"$O.{BUCKET}.M.{base64.urlsafe_b64encode(object_name.encode()).decode()}"


async def _holder(
    rt: WorkerGatewayRuntime, rpc: RpcClient, worker_key: str, task_id: str, attempt: int
) -> ClaimInfo:
    """The claim of `task_id` when the key's worker holds its running `attempt`; 403 otherwise."""
    identity: WorkerIdentity = await rt.db.run(registration.authenticate, worker_key)
    claim: ClaimInfo = await rpc.call(endpoints.Scheduler.CLAIM_INFO, ClaimInfoRequest(task_id=task_id))
    if claim.worker_id != identity.worker_id or claim.attempt != attempt or claim.status != "running":
        raise Forbidden(NOT_HELD, code="attempt_not_held")
    return claim


async def _info(js: JetStreamContext, object_name: str) -> ObjectInfo | None:
    try:
        msg = await js.get_last_msg(ARTIFACTS_STREAM, meta_subject(object_name))
    except NotFoundError:
        return None
    info = ObjectInfo.from_response(json.loads(msg.data or b"{}"))
    return None if info.deleted else info


def _org_of(info: ObjectInfo) -> str | None:
    value = (info.headers or {}).get(ORG_HEADER)
    if isinstance(value, list):
        return str(value[0]) if value else None
    return str(value) if value is not None else None


async def commit(rt: WorkerGatewayRuntime, rpc: RpcClient, req: ArtifactCommitRequest) -> ArtifactRef:
    claim = await _holder(rt, rpc, req.worker_key, req.task_id, req.attempt)
    js = rt.broker.connection.jetstream()
    chunks = chunk_subject(req.nuid)
    if req.chunks:
        state = (await js.stream_info(ARTIFACTS_STREAM, subjects_filter=chunks)).state
        stored = (state.subjects or {}).get(chunks, 0)
        if stored != req.chunks:
            raise Invalid(f"{stored} of {req.chunks} chunks arrived", field="chunks", code="chunks_missing")
    object_name = artifact_object_name(req.task_id, req.attempt, req.name)
    previous = await _info(js, object_name)
    info = ObjectInfo(
        name=object_name,
        description=req.content_type,
        headers={ORG_HEADER: [claim.org_id]},
        options=ObjectMetaOptions(max_chunk_size=128 * 1024),
        bucket=BUCKET,
        nuid=req.nuid,
        size=req.size,
        chunks=req.chunks,
        digest=req.digest,
        mtime=datetime.now(UTC).isoformat(),
    )
    await js.publish(meta_subject(object_name), json.dumps(info.as_dict()).encode(), headers=ROLLUP)
    if previous is not None and previous.nuid and previous.nuid != req.nuid:
        await js.purge_stream(ARTIFACTS_STREAM, subject=chunk_subject(previous.nuid))
    return ArtifactRef(name=req.name, object_name=object_name, content_type=req.content_type, size=req.size)


async def read(rt: WorkerGatewayRuntime, rpc: RpcClient, req: ArtifactReadRequest) -> ArtifactChunk:
    claim = await _holder(rt, rpc, req.worker_key, req.task_id, req.attempt)
    source = req.source
    label = f"artifact {source.name!r} of task {source.task_id}"
    if source.attempt is None:
        raise Invalid(f"{label}: the reference names no attempt", field="source.attempt")
    js = rt.broker.connection.jetstream()
    info = await _info(js, artifact_object_name(source.task_id, source.attempt, source.name))
    # another organization's artifact answers exactly like a missing one
    if info is None or _org_of(info) != claim.org_id or not info.nuid:
        raise NotFound(f"{label} not found (it may have expired)", code="artifact_not_found")
    size, chunks = int(info.size or 0), int(info.chunks or 0)
    if size > MAX_UPLOAD_BYTES:
        raise Invalid(f"{label} is {size} bytes; an upload takes at most {MAX_UPLOAD_BYTES}", field="source")
    content_type = info.description or "application/octet-stream"
    if chunks == 0:
        return ArtifactChunk(data=b"", content_type=content_type, size=size, chunks=0, next_after=None)
    if req.index >= chunks:
        raise Invalid(f"{label} has {chunks} chunks", field="index")
    try:
        msg = await js.get_msg(
            ARTIFACTS_STREAM, seq=req.after + 1, subject=chunk_subject(info.nuid), next=True
        )
    except NotFoundError:
        raise NotFound(f"{label} not found (it may have expired)", code="artifact_not_found") from None
    last = req.index + 1 >= chunks
    return ArtifactChunk(
        data=msg.data or b"",
        content_type=content_type,
        size=size,
        chunks=chunks,
        next_after=None if last else int(msg.seq or 0),
    )


def build_artifacts_router(rt: WorkerGatewayRuntime) -> NatsRouter:
    router = rpc_router(max_workers=rt.settings.db_pool_size)

    def rpc() -> RpcClient:
        return RpcClient(rt.broker.connection, timeout=rt.settings.rpc_timeout_seconds)

    @router.handle(endpoints.Workers.COMMIT_ARTIFACT)
    async def commit_artifact(body: ArtifactCommitRequest) -> ArtifactRef:
        return await commit(rt, rpc(), body)

    @router.handle(endpoints.Workers.READ_ARTIFACT)
    async def read_artifact(body: ArtifactReadRequest) -> ArtifactChunk:
        return await read(rt, rpc(), body)

    return router
