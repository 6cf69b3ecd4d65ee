"""What a remote worker's frames become on the bus, sent as the worker itself (its own connection): updates on
TASK_UPDATES under its own id, requests to the endpoints it may call, artifact chunks into the object store
and their commit. Answers are relayed as the service's bytes, never parsed: a vault release stays sealed."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.artifacts import ArtifactCommitRequest
from browserfleet_contracts.common import ErrorBody
from browserfleet_contracts.tasks import TaskUpdateMessage, artifact_object_name
from browserfleet_contracts.worker_socket import (
    ArtifactBegin,
    ArtifactEnd,
    Log,
    Request,
    Result,
    Security,
    relayed_endpoints,
)
from browserfleet_core.errors import Invalid, ServiceError, Unavailable
from browserfleet_core.messaging import ERROR_HEADER, validation_error_body
from browserfleet_core.projection import attributes
from nats.aio.client import Client as NatsClient
from pydantic import ValidationError

RELAYED = relayed_endpoints()
# what a RESULT frame says that its TASK_UPDATES message carries under the same names
RESULT_FIELDS = (
    "status",
    "result",
    "error_message",
    "error_step",
    "artifacts",
    "execution_time_seconds",
    "logs",
    "retryable",
)


class FrameRefused(Exception):
    """A frame the bridge will not act on: answered with an ERROR naming `code`; counts as abuse."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        id: int | None = None,
        task_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field
        self.id, self.task_id = id, task_id


async def request(nc: NatsClient, subject: str, payload: bytes, timeout: float) -> str:
    """The service's answer to `payload` on `subject`, as the JSON text it sent; its error as ServiceError."""
    try:
        msg = await nc.request(
            subject, payload, timeout=timeout, headers={"content-type": "application/json"}
        )
    except nats.errors.NoRespondersError:
        raise Unavailable(f"{subject}: no service is answering", code="service_unavailable") from None
    except (nats.errors.TimeoutError, TimeoutError):
        raise Unavailable(f"{subject} did not answer in time", code="service_timeout") from None
    except nats.errors.Error as exc:  # the bus connection is down or reconnecting
        raise Unavailable(f"the bus cannot be reached now ({exc})", code="bus_unavailable") from None
    if msg.headers and ERROR_HEADER in msg.headers:
        raise ServiceError.from_body(ErrorBody.model_validate_json(msg.data))
    return msg.data.decode()


def relayed_request(frame: Request, worker_key: str) -> tuple[str, bytes]:
    """The subject and body of a REQUEST: an endpoint a worker may call and no frame of its own carries, with
    a body its declaration accepts, whose `worker_key` is this connection's (whatever the frame said)."""
    endpoint = RELAYED.get(frame.endpoint)
    if endpoint is None:
        raise FrameRefused(
            "endpoint_not_allowed",
            f"{frame.endpoint!r} is not a request a worker makes through this socket "
            f"(one of: {', '.join(sorted(RELAYED))})",
            field="endpoint",
        )
    body = dict(frame.body)
    if "worker_key" in endpoint.request.model_fields:
        body["worker_key"] = worker_key
    try:
        model = endpoint.request.model_validate(body)
    except ValidationError as exc:
        error = validation_error_body(exc, prefix="body")
        raise FrameRefused("invalid_frame", error.message, field=error.field) from None
    return endpoint.subject, model.model_dump_json().encode()


async def publish_update(nc: NatsClient, update: TaskUpdateMessage, msg_id: str) -> None:
    """On TASK_UPDATES under the worker's own id (the only one its identity may publish), stored once."""
    try:
        await nc.jetstream().publish(
            subjects.task_update(update.worker_id, update.task_id),
            update.model_dump_json().encode(),
            stream=subjects.TASK_UPDATES_STREAM,
            headers={"Nats-Msg-Id": msg_id},
        )
    except (nats.errors.Error, TimeoutError) as exc:
        raise Unavailable(f"the update could not be stored now ({exc})", code="bus_unavailable") from None


def update_of(frame: Log | Security | Result, worker_id: str) -> tuple[TaskUpdateMessage, str]:
    """The TASK_UPDATES message a frame stands for, and its message id."""
    base = {**attributes(frame, "task_id", "attempt"), "worker_id": worker_id}
    if isinstance(frame, Log):
        update = TaskUpdateMessage(**base, kind="log", logs=frame.lines)
        return update, subjects.update_msg_id(frame.task_id, frame.attempt, "log", frame.first)
    if isinstance(frame, Security):
        update = TaskUpdateMessage(**base, kind="security", security=frame.data)
        return update, subjects.update_msg_id(frame.task_id, frame.attempt, "security", frame.seq)
    for ref in frame.artifacts:  # an attempt reports its own artifacts only
        if ref.object_name != artifact_object_name(frame.task_id, frame.attempt, ref.name):
            raise FrameRefused(
                "invalid_frame",
                f"artifact {ref.name!r} is not one of this attempt's ({ref.object_name})",
                field="artifacts",
            )
    update = TaskUpdateMessage(**base, kind="result", **attributes(frame, *RESULT_FIELDS))
    return update, subjects.update_msg_id(frame.task_id, frame.attempt, "result")


# --- artifacts --------------------------------------------------------------------------------------------
@dataclass
class Upload:
    """An artifact on its way in: its chunks go to the object store as they arrive (nothing is buffered
    here), under a chunk id the bridge chose, then ARTIFACT_END commits them."""

    begin: ArtifactBegin
    nuid: str = field(default_factory=lambda: secrets.token_hex(11))
    received: int = 0
    chunks: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def digest_text(self) -> str:
        return "SHA-256=" + base64.urlsafe_b64encode(self.digest.digest()).decode()


async def store_chunk(nc: NatsClient, upload: Upload, data: bytes) -> None:
    begin = upload.begin
    if upload.received + len(data) > begin.size:
        raise FrameRefused(
            "upload_mismatch",
            f"artifact {begin.name!r}: more than the {begin.size} bytes ARTIFACT_BEGIN announced",
        )
    try:
        await nc.jetstream().publish(f"$O.{subjects.ARTIFACTS_BUCKET}.C.{upload.nuid}", data)
    except (nats.errors.Error, TimeoutError) as exc:
        raise Unavailable(f"the chunk could not be stored now ({exc})", code="bus_unavailable") from None
    upload.received += len(data)
    upload.chunks += 1
    upload.digest.update(data)


def commit_request(upload: Upload, end: ArtifactEnd, worker_key: str) -> bytes:
    begin = upload.begin
    problems = []
    if end.chunks != upload.chunks:
        problems.append(f"{upload.chunks} chunks arrived, ARTIFACT_END says {end.chunks}")
    if upload.received != begin.size:
        problems.append(f"{upload.received} of the {begin.size} bytes announced arrived")
    if end.digest != upload.digest_text():
        problems.append("the digest is not the bytes' SHA-256")
    if problems:
        raise FrameRefused("upload_mismatch", f"artifact {begin.name!r}: {'; '.join(problems)}")
    try:
        req = ArtifactCommitRequest(
            worker_key=worker_key,
            **attributes(begin, "task_id", "attempt", "name", "content_type"),
            nuid=upload.nuid,
            size=upload.received,
            chunks=upload.chunks,
            digest=upload.digest_text(),
        )
    except ValidationError as exc:  # pragma: no cover - the frame's own limits are these
        raise Invalid(validation_error_body(exc).message) from None
    return req.model_dump_json().encode()


COMMIT_SUBJECT = endpoints.Workers.COMMIT_ARTIFACT.subject
HEARTBEAT_SUBJECT = endpoints.Workers.HEARTBEAT.subject


def invalid_frame(exc: ValidationError) -> FrameRefused:
    """What is wrong with a frame that is not one of the protocol's, named."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if not errors:
        return FrameRefused("invalid_frame", str(exc))
    first = errors[0]
    if first.get("type") in (
        "union_tag_invalid",
        "union_tag_not_found",
        "model_attributes_type",
        "dict_type",
    ):
        return FrameRefused(
            "unknown_type", "a frame is a JSON object whose `type` is one of this protocol's", field="type"
        )
    loc = ".".join(str(p) for p in first["loc"][1:])  # the first part is the frame type's tag
    message = f"{loc}: {first['msg']}" if loc else str(first["msg"])
    return FrameRefused("invalid_frame", message, field=loc or None)


def about(frame_id: int, task_id: str | None, fn: Any, *args: Any) -> Any:
    """`fn(*args)`, its refusal naming the frame it answers."""
    try:
        return fn(*args)
    except FrameRefused as exc:
        exc.id, exc.task_id = frame_id, task_id
        raise
