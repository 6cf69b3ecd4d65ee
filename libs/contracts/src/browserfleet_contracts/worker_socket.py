"""Remote workers over WebSocket (`/workers/ws` on the gateway; docs/websocket.md "Remote workers"): the frames
a worker and worker-gateway's bridge exchange, their limits and the close codes.

A worker that can reach only the gateway's URL speaks this instead of NATS. The bridge (in worker-gateway)
joins the bus *as that worker* (the same identity the auth callout gives an in-cluster worker, so the server
enforces the same allow-lists), pulls its pool's TASKS messages for it, claims them, and relays what the
worker says. The task rules do not change: a TASKS message is acknowledged only after the attempt's result is
on TASK_UPDATES, its lease lives while the worker reports `PROGRESS`, and a socket that dies lets it be
redelivered unless the worker comes back with its `lease` in time.

One JSON object per text frame, with a `type`; an artifact's bytes travel as binary frames (`chunk_frame`).
A frame the worker expects an answer to carries an `id` (any positive number, unique among its unanswered
frames) and is answered by `REPLY` or `ERROR` with the same id. `REPLY.data` is the service's answer as
raw JSON text: the bridge never parses it, so a vault release stays sealed to the worker's key on its way.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, Field

from . import endpoints
from .bus import WORKER
from .common import Contract
from .tasks import ArtifactRef, ResultStatus, TaskDispatch, TaskLogLine
from .workers import DeviceInfo

PATH: Final = "/workers/ws"
# a text frame larger than this is answered with ERROR frame_too_large; one larger than MAX_SOCKET_FRAME_BYTES
# ends the socket (1009) before anyone reads it
MAX_FRAME_BYTES: Final = 1024 * 1024
MAX_SOCKET_FRAME_BYTES: Final = 4 * MAX_FRAME_BYTES
CHUNK_BYTES: Final = 128 * 1024  # an artifact chunk (artifacts.CHUNK_SIZE: the object store's chunk)
MAX_ARTIFACT_BYTES: Final = 512 * 1024 * 1024
MAX_SLOTS: Final = 64
AUTH_TIMEOUT_SECONDS: Final = 10.0  # WORKER_CONNECT must come within this

Id = Annotated[int, Field(ge=1, le=2**53)]
TaskId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Attempt = Annotated[int, Field(ge=1)]
UploadId = Annotated[str, Field(pattern=r"^[A-Za-z0-9]{8,32}$")]


class SocketCloseCode(IntEnum):
    """Why the bridge closed a worker's socket. A worker reconnects (with backoff) after any but
    UNAUTHORIZED: its key is unknown or was removed, and trying again cannot help."""

    NORMAL = 1000
    GOING_AWAY = 1001  # worker-gateway is stopping: reconnect (another replica, or this one once back)
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # the bus or worker-gateway cannot be reached now
    UNAUTHORIZED = 4401
    AUTH_TIMEOUT = 4408
    REPLACED = 4409  # the same worker connected again: the newer socket wins
    ABUSE = 4429  # too many bad frames


FINAL_CLOSE_CODES: Final = frozenset({SocketCloseCode.UNAUTHORIZED})


# --- worker -> bridge ---------------------------------------------------------------------------------
class HeldTask(Contract):
    """A task the worker is still running when it connects again: the bridge resumes it (and its lease)
    if the scheduler still says this worker holds that running attempt, else lists it in `lost`."""

    task_id: TaskId
    attempt: Attempt
    lease: str = Field(min_length=1, max_length=512, description="the `lease` of its TASK_ASSIGNED")
    started: bool = Field(default=False, description="STARTED was sent (and answered) for it")


class WorkerConnect(Contract):
    """The first frame (the seed's): who the worker is, and what it can take."""

    type: Literal["WORKER_CONNECT"]
    api_key: str = Field(min_length=1, max_length=200, description="the worker's `sk_worker_…` key")
    slots: int = Field(default=1, ge=0, le=MAX_SLOTS, description="tasks it will hold at once (0: none now)")
    public_key: str | None = Field(
        default=None,
        min_length=43,
        max_length=44,
        pattern=r"^[A-Za-z0-9_-]+={0,1}$",
        description="this process's X25519 public key (base64url); a new one replaces the registered one "
        "(a new process: a drain of the previous run is cleared), the same one is a reconnection",
    )
    device_info: DeviceInfo | None = None
    held: list[HeldTask] = Field(default_factory=list, max_length=MAX_SLOTS)


class Ready(Contract):
    """How many tasks the worker will hold at once from now on; 0 stops new assignments (a drain)."""

    type: Literal["READY"]
    slots: int = Field(ge=0, le=MAX_SLOTS)


class HeartbeatFrame(Contract):
    """Presence (svc.workers.heartbeat as this worker); REPLY.data is the `HeartbeatReply`."""

    type: Literal["HEARTBEAT"]
    id: Id
    running_tasks: int = Field(default=0, ge=0, le=MAX_SLOTS)


class TaskFrame(Contract):
    task_id: TaskId
    attempt: Attempt


class Started(TaskFrame):
    type: Literal["STARTED"]
    id: Id


class Log(TaskFrame):
    """Log lines while the task runs; `first` is the first line's `seq` (the batch's message id)."""

    type: Literal["LOG"]
    id: Id
    first: int = Field(ge=0)
    lines: list[TaskLogLine] = Field(min_length=1, max_length=1000)


class Progress(TaskFrame):
    """The task is still running: its lease is extended (a JetStream in-progress ack). Not answered."""

    type: Literal["PROGRESS"]


class Security(TaskFrame):
    """A request safe browsing refused (`RequestBlockedData`), numbered per attempt (`seq`: 1, 2, … or
    `summary`); the scheduler emits `security.request_blocked` once it checked the holder."""

    type: Literal["SECURITY"]
    id: Id
    seq: str = Field(pattern=r"^[A-Za-z0-9]{1,16}$")
    data: dict[str, Any]


class Result(TaskFrame):
    """The attempt's outcome; answered once it is on TASK_UPDATES and the TASKS message is acknowledged.
    A worker keeps sending it (across reconnections) until it is answered."""

    type: Literal["RESULT"]
    id: Id
    status: ResultStatus
    result: dict[str, Any] | None = None
    error_message: str | None = Field(default=None, max_length=10_000)
    error_step: int | None = Field(default=None, ge=0)
    artifacts: list[ArtifactRef] = Field(default_factory=list, max_length=1000)
    execution_time_seconds: float | None = Field(default=None, ge=0)
    logs: list[TaskLogLine] = Field(default_factory=list, max_length=10_000)
    retryable: bool = False


class HandBack(TaskFrame):
    """The worker gives the task back unfinished (shutdown out of grace): it is redelivered at once."""

    type: Literal["HAND_BACK"]
    id: Id


class Request(Contract):
    """A request the worker makes on the bus through the bridge, as itself (`RELAYED` lists which): the
    vault's releases, its organization's policy, profiles, an earlier artifact, its own status."""

    type: Literal["REQUEST"]
    id: Id
    endpoint: str = Field(
        min_length=1, max_length=100, description="the endpoint's subject, e.g. svc.vault.release"
    )
    body: dict[str, Any]


class ArtifactBegin(TaskFrame):
    """An artifact of the attempt follows as binary frames (`chunk_frame(upload, bytes)`), then ARTIFACT_END."""

    type: Literal["ARTIFACT_BEGIN"]
    id: Id
    upload: UploadId
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^/\x00-\x1f]+$")
    content_type: str = Field(min_length=1, max_length=200)
    size: int = Field(ge=0, le=MAX_ARTIFACT_BYTES)


class ArtifactEnd(Contract):
    """Every chunk was sent: the bridge commits the artifact; REPLY.data is its `ArtifactRef`."""

    type: Literal["ARTIFACT_END"]
    id: Id
    upload: UploadId
    chunks: int = Field(ge=0)
    digest: str = Field(min_length=1, max_length=100, description="`SHA-256=<base64url of the bytes>`")


class Drained(Contract):
    """The answer to DRAIN once the running tasks finished or were handed back."""

    type: Literal["DRAINED"]
    finished: int = Field(ge=0)
    handed_back: int = Field(ge=0)


ClientFrame = Annotated[
    WorkerConnect
    | Ready
    | HeartbeatFrame
    | Started
    | Log
    | Progress
    | Security
    | Result
    | HandBack
    | Request
    | ArtifactBegin
    | ArtifactEnd
    | Drained,
    Field(discriminator="type"),
]


# --- bridge -> worker ---------------------------------------------------------------------------------
class LostTask(BaseModel):
    task_id: str
    attempt: int
    reason: str


class Connected(BaseModel):
    type: Literal["CONNECTED"] = "CONNECTED"
    worker_id: str
    name: str
    org_id: str | None
    pool: str
    heartbeat_seconds: float
    max_frame_bytes: int = MAX_FRAME_BYTES
    chunk_bytes: int = CHUNK_BYTES
    resumed: list[str] = Field(default_factory=list, description="held tasks whose lease goes on")
    lost: list[LostTask] = Field(
        default_factory=list, description="held tasks this worker no longer holds: stop them"
    )


class TaskAssigned(BaseModel):
    """The seed's: a task claimed for this worker. Its secrets are released on request (REQUEST
    svc.vault.release), sealed to the worker's key."""

    type: Literal["TASK_ASSIGNED"] = "TASK_ASSIGNED"
    task_id: str
    attempt: int
    worker_id: str
    task: TaskDispatch
    lease: str = Field(description="opaque: send it back in WORKER_CONNECT.held after a reconnection")


class Cancel(BaseModel):
    """Stop the task (cancelled through the API, or its lease was lost): its result changes nothing."""

    type: Literal["CANCEL"] = "CANCEL"
    task_id: str
    attempt: int | None = None
    reason: str


class Drain(BaseModel):
    type: Literal["DRAIN"] = "DRAIN"
    reason: str = "an admin asked this worker to drain"


class Reply(BaseModel):
    type: Literal["REPLY"] = "REPLY"
    id: int
    data: str | None = Field(
        default=None, description="the service's answer, as JSON text, when there is one"
    )


class ErrorFrame(BaseModel):
    """What was wrong with a frame (`id` when it had one), or why the socket is about to close."""

    type: Literal["ERROR"] = "ERROR"
    id: int | None = None
    code: str
    message: str
    status: int = 400
    field: str | None = None
    task_id: str | None = None
    retryable: bool = Field(default=False, description="the same frame may succeed later (the bus was down)")


ServerFrame = Annotated[
    Connected | TaskAssigned | Cancel | Drain | Reply | ErrorFrame, Field(discriminator="type")
]


# --- artifact bytes -------------------------------------------------------------------------------------
def chunk_frame(upload: str, data: bytes) -> bytes:
    """A binary frame: one byte with the upload id's length, the id (ASCII), then the chunk's bytes."""
    token = upload.encode("ascii")
    return bytes([len(token)]) + token + data


def parse_chunk_frame(frame: bytes) -> tuple[str, bytes]:
    """(upload id, chunk) of a binary frame; ValueError when it is not one."""
    if not frame:
        raise ValueError("an empty binary frame")
    size = frame[0]
    if not 8 <= size <= 32 or len(frame) < 1 + size:
        raise ValueError("a binary frame starts with its upload id's length (8-32) and the id")
    token = frame[1 : 1 + size]
    if not token.isascii() or not token.isalnum():
        raise ValueError("the upload id of a binary frame is letters and digits")
    return token.decode("ascii"), frame[1 + size :]


# --- what the bridge relays -----------------------------------------------------------------------------
# carried by frames of their own: the bridge claims (it holds the TASKS message), HEARTBEAT beats, ARTIFACT_END
# commits (the bridge wrote the chunks), WORKER_CONNECT's public key rotates
_OWN_FRAMES: Final = frozenset(
    ep.subject
    for ep in (
        endpoints.Scheduler.CLAIM,
        endpoints.Workers.HEARTBEAT,
        endpoints.Workers.COMMIT_ARTIFACT,
        endpoints.Workers.ROTATE_KEY,
    )
)


def relayed_endpoints() -> dict[str, endpoints.Endpoint[Any, Any]]:
    """Every endpoint a worker may call (its declared callers name `worker`) that no frame of its own carries,
    by subject: what REQUEST may name."""
    return {
        ep.subject: ep
        for ep in endpoints.all_endpoints()
        if WORKER in ep.callers and ep.subject not in _OWN_FRAMES
    }
