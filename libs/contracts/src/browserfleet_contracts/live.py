"""The live view of a running task: what the gateway and the worker running the task say to each other over
core NATS (subjects `subjects.live_*`), and the messages of the viewer's WebSocket
(`GET /api/v1/tasks/{task_id}/live`, docs/liveview.md).

Only while someone watches: a gateway asks the worker to start the screencast (`live_start`, request/reply)
and renews that request every `LIVE_KEEPALIVE_SECONDS`; the worker stops when every watcher said `live_stop`
or none renewed for `LIVE_IDLE_SECONDS` (a gateway that died says nothing). Frames go out on core NATS only:
no stream captures `tasks.live.>`, so nothing is stored.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, Field

from .common import Contract

LIVE_KEEPALIVE_SECONDS: Final = 3.0
# several renewals may be lost before the worker gives up; a viewer never sees a gap from one lost message
LIVE_IDLE_SECONDS: Final = 10.0

WatcherId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


# --- gateway <-> worker (core NATS) -------------------------------------------------------------------
class _WatcherRequest(Contract):
    """What a gateway's request to the worker running a task names: which attempt, and for which watcher."""

    task_id: str = Field(min_length=1, max_length=64)
    attempt: int = Field(ge=1)
    watcher: WatcherId


class LiveStartRequest(_WatcherRequest):
    """Start the screencast of `task_id`'s browser for `watcher` (one gateway process), or keep it going."""


class LiveStartReply(BaseModel):
    accepted: bool
    # why not (`accepted` false): the worker's operator turned live view off, or the attempt is another one
    reason: str | None = None
    # the page's viewport (CSS pixels) when known; frames are at most max_width x max_height device pixels
    width: int | None = None
    height: int | None = None
    max_fps: float | None = None
    handoff: str | None = Field(default=None, description="the run waits for a person: what they should do")


class LiveStop(Contract):
    watcher: WatcherId


class LiveFrame(BaseModel):
    """One screencast frame, as Chromium painted it (`Page.screencastFrame`)."""

    kind: Literal["frame"] = "frame"
    task_id: str
    attempt: int
    seq: int = Field(ge=0, description="frame number within this screencast")
    ts: float = Field(description="when Chromium painted it, Unix seconds")
    width: int = Field(ge=0, description="the page's width in CSS pixels (for mapping input back)")
    height: int = Field(ge=0)
    format: Literal["jpeg"] = "jpeg"
    data: str = Field(description="the image, base64 (as Chromium gives it: never decoded on the way)")


class LiveEnded(BaseModel):
    """The attempt's run is over: no more frames will come for it."""

    kind: Literal["ended"] = "ended"
    task_id: str
    attempt: int
    reason: str = "task finished"


class LiveHandoff(BaseModel):
    """A handoff step began (`waiting`, with its message) or ended (continued or timed out)."""

    kind: Literal["handoff"] = "handoff"
    task_id: str
    attempt: int
    waiting: bool
    message: str = ""


LiveMessage = Annotated[LiveFrame | LiveEnded | LiveHandoff, Field(discriminator="kind")]


# --- takeover: a person's mouse and keyboard on the task's page ----------------------------------------------
# What Chromium's Input.dispatchMouseEvent / Input.dispatchKeyEvent take, bounded. Coordinates are the page's
# CSS pixels (FRAME's width/height). Modifiers are CDP's bit set: Alt 1, Ctrl 2, Meta 4, Shift 8.
MAX_COORDINATE: Final = 16_384.0


class MouseInput(Contract):
    type: Literal["INPUT"]
    kind: Literal["mouse"]
    event: Literal["mousePressed", "mouseReleased", "mouseMoved", "mouseWheel"]
    x: float = Field(ge=0, le=MAX_COORDINATE)
    y: float = Field(ge=0, le=MAX_COORDINATE)
    button: Literal["none", "left", "middle", "right"] = "none"
    click_count: int = Field(default=0, ge=0, le=3)
    delta_x: float = Field(default=0, ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    delta_y: float = Field(default=0, ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    modifiers: int = Field(default=0, ge=0, le=15)


class KeyInput(Contract):
    type: Literal["INPUT"]
    kind: Literal["key"]
    event: Literal["keyDown", "keyUp", "char"]
    key: str = Field(default="", max_length=32, description="the DOM `key`, e.g. `a`, `Enter`, `ArrowLeft`")
    code: str = Field(default="", max_length=32, description="the DOM `code`, e.g. `KeyA`")
    text: str = Field(default="", max_length=4, description="what the key types (keyDown, char)")
    modifiers: int = Field(default=0, ge=0, le=15)


class ContinueInput(Contract):
    """Ends the handoff step the task waits in (nothing when it waits in none)."""

    type: Literal["INPUT"]
    kind: Literal["continue"]


Input = Annotated[MouseInput | KeyInput | ContinueInput, Field(discriminator="kind")]


class LiveInput(_WatcherRequest):
    """Gateway -> worker (`subjects.live_input`): one input event from a person who may change the task."""

    event: Input


# --- the viewer's WebSocket ---------------------------------------------------------------------------------
# client -> gateway: the event stream's PING (-> PONG) and AUTH (a fresh token for the same user or key extends
# the socket past the old token's expiry), and INPUT above (takeover: users and `tasks:write` keys only).

# gateway -> client
# LIVE_ENDED reasons
ENDED_NOT_RUNNING: Final = "not running"
ENDED_FINISHED: Final = "task finished"
ENDED_UNAVAILABLE: Final = "worker unavailable"


class LiveStartedMessage(BaseModel):
    type: Literal["LIVE_STARTED"] = "LIVE_STARTED"
    task_id: str
    attempt: int
    width: int | None = None
    height: int | None = None
    max_fps: float | None = None
    handoff: str | None = Field(default=None, description="set while the task waits for a person to continue")


class HandoffMessage(BaseModel):
    """The task began waiting for a person (`waiting`, with the step's message), or stopped waiting."""

    type: Literal["HANDOFF"] = "HANDOFF"
    task_id: str
    waiting: bool
    message: str = ""


class FrameMessage(BaseModel):
    type: Literal["FRAME"] = "FRAME"
    task_id: str
    seq: int
    ts: float
    width: int
    height: int
    format: Literal["jpeg"] = "jpeg"
    data: str


class LiveEndedMessage(BaseModel):
    type: Literal["LIVE_ENDED"] = "LIVE_ENDED"
    task_id: str
    reason: str
    status: str | None = Field(default=None, description="the task's status, when the gateway knows it")
