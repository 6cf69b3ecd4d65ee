"""Stands in for worker-gateway (another service) on `svc.workers.commit_artifact` / `read_artifact` for this
package's tests: a commit writes the object's metadata over the chunks the worker sent, with the
organization the test says the task belongs to (worker-gateway asks the scheduler); a read serves an
artifact's chunks to a task of the same organization only. The object store is the real one."""

from __future__ import annotations

import base64
import json

import nats
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.artifacts import (
    ORG_HEADER,
    ArtifactChunk,
    ArtifactCommitRequest,
    ArtifactReadRequest,
)
from browserfleet_contracts.tasks import ArtifactRef, artifact_object_name
from browserfleet_core.errors import NotFound, ServiceError
from browserfleet_core.messaging import ERROR_HEADER
from browserfleet_core.streams import ARTIFACTS_STREAM
from nats.aio.msg import Msg
from nats.js.api import ObjectInfo
from nats.js.errors import NotFoundError

BUCKET = subjects.ARTIFACTS_BUCKET


def _meta(name: str) -> str:
    return f"$O.{BUCKET}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


class ArtifactStand:
    def __init__(self, nc: nats.NATS) -> None:
        self.nc = nc
        self.orgs: dict[str, str] = {}  # task id -> its organization (default "org-a")

    async def start(self) -> None:
        await self.nc.subscribe(endpoints.Workers.COMMIT_ARTIFACT.subject, cb=self._commit)
        await self.nc.subscribe(endpoints.Workers.READ_ARTIFACT.subject, cb=self._read)

    async def _answer(self, msg: Msg, reply: ArtifactRef | ArtifactChunk | ServiceError) -> None:
        if isinstance(reply, ServiceError):
            body = reply.body()
            await self.nc.publish(
                msg.reply, body.model_dump_json().encode(), headers={ERROR_HEADER: str(body.status)}
            )
        else:
            await msg.respond(reply.model_dump_json().encode())

    async def _commit(self, msg: Msg) -> None:
        req = ArtifactCommitRequest.model_validate_json(msg.data)
        name = artifact_object_name(req.task_id, req.attempt, req.name)
        info = ObjectInfo(
            name=name,
            description=req.content_type,
            headers={ORG_HEADER: [self.orgs.get(req.task_id, "org-a")]},
            bucket=BUCKET,
            nuid=req.nuid,
            size=req.size,
            chunks=req.chunks,
            digest=req.digest,
        )
        await self.nc.jetstream().publish(_meta(name), json.dumps(info.as_dict()).encode())
        await self._answer(
            msg, ArtifactRef(name=req.name, object_name=name, content_type=req.content_type, size=req.size)
        )

    async def _read(self, msg: Msg) -> None:
        req = ArtifactReadRequest.model_validate_json(msg.data)
        js = self.nc.jetstream()
        src = req.source
        missing = NotFound("not found", code="artifact_not_found")
        try:
            last = await js.get_last_msg(
                ARTIFACTS_STREAM, _meta(artifact_object_name(src.task_id, src.attempt or 0, src.name))
            )
        except NotFoundError:
            await self._answer(msg, missing)
            return
        info = ObjectInfo.from_response(json.loads(last.data or b"{}"))
        org = (info.headers or {}).get(ORG_HEADER, [None])[0]
        if org != self.orgs.get(req.task_id, "org-a"):
            await self._answer(msg, missing)
            return
        chunk = await js.get_msg(
            ARTIFACTS_STREAM, seq=req.after + 1, subject=f"$O.{BUCKET}.C.{info.nuid}", next=True
        )
        last_one = req.index + 1 >= (info.chunks or 0)
        await self._answer(
            msg,
            ArtifactChunk(
                data=chunk.data or b"",
                content_type=info.description or "application/octet-stream",
                size=info.size or 0,
                chunks=info.chunks or 0,
                next_after=None if last_one else int(chunk.seq or 0),
            ),
        )
