"""The organization's event stream over WebSocket (`GET /api/v1/events/ws`, docs/websocket.md): the messages
a client sends and receives, the close codes, and the ticket a browser authenticates with."""

from __future__ import annotations

import re
from datetime import datetime
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from .common import Contract, Role
from .events import EVENT_FILTER_PATTERN, TaskLogEventLine

CHANNEL_PREFIX = "org:"
MAX_TYPE_FILTERS = 50


def channel(org_id: str) -> str:
    """The one channel an organization's members may subscribe to: `org:<org_id>`."""
    return f"{CHANNEL_PREFIX}{org_id}"


class CloseCode(IntEnum):
    """Close codes of the gateway's WebSockets (4000-4999 are the application's; 4xxx mirrors HTTP)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    SLOW_CONSUMER = 4008
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    TIMEOUT = 4408
    TOO_MANY_MESSAGES = 4429


# --- client -> gateway ---------------------------------------------------------------------------
class AuthMessage(Contract):
    """First message of a socket opened without a credential: an access token or an `sk_api_` key."""

    type: Literal["AUTH"]
    token: str = Field(min_length=1, max_length=8192)


class SubscribeMessage(Contract):
    type: Literal["SUBSCRIBE"]
    channel: str = Field(min_length=1, max_length=128, description="`org:<your org id>`")
    types: list[str] | None = Field(
        default=None,
        max_length=MAX_TYPE_FILTERS,
        description="event types to receive: `task.completed`, `task.*`, `*`; none: every type",
    )
    task_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="only events about this task",
    )
    since: int | None = Field(
        default=None, ge=0, description="resume after this `seq`: every event after it, none twice"
    )

    @field_validator("types")
    @classmethod
    def _filters(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        for i, e in enumerate(v):
            if not re.match(EVENT_FILTER_PATTERN, e):
                raise ValueError(
                    f"types[{i}]: {e[:64]!r} is not an event type like task.completed, task.* or *"
                )
        return sorted(set(v))


class UnsubscribeMessage(Contract):
    type: Literal["UNSUBSCRIBE"]
    channel: str = Field(min_length=1, max_length=128)


class PingMessage(Contract):
    type: Literal["PING"]


ClientMessage = Annotated[
    AuthMessage | SubscribeMessage | UnsubscribeMessage | PingMessage, Field(discriminator="type")
]


# --- gateway -> client ---------------------------------------------------------------------------
class Authenticated(BaseModel):
    type: Literal["AUTHENTICATED"] = "AUTHENTICATED"
    org_id: str
    role: Role
    kind: Literal["user", "api_key"]
    expires_at: datetime | None = Field(description="the stream ends (4401) when the credential expires")


class Subscribed(BaseModel):
    type: Literal["SUBSCRIBED"] = "SUBSCRIBED"
    channel: str
    seq: int = Field(
        description="the stream position: events after it follow; with `since`, the events between `since` "
        "and it come first (replayed)"
    )
    since: int | None = None
    gap: bool = Field(
        default=False,
        description="events after `since` were no longer retained: some were lost, reload state over REST",
    )
    types: list[str] | None = None
    task_id: str | None = None


class Unsubscribed(BaseModel):
    type: Literal["UNSUBSCRIBED"] = "UNSUBSCRIBED"
    channel: str


class Pong(BaseModel):
    type: Literal["PONG"] = "PONG"


class ErrorMessage(BaseModel):
    type: Literal["ERROR"] = "ERROR"
    code: str
    message: str
    field: str | None = None


class StreamEvent(BaseModel):
    """What every event message carries: `seq` is the EVENTS stream sequence (the resume cursor),
    `event` the domain event type, `timestamp` when it happened."""

    seq: int
    timestamp: datetime
    event: str


class TaskStatusChange(StreamEvent):
    type: Literal["TASK_STATUS_CHANGE"] = "TASK_STATUS_CHANGE"
    task_id: str
    status: str
    attempt: int | None = None
    worker_id: str | None = None
    data: dict[str, Any]


class TaskLog(StreamEvent):
    type: Literal["TASK_LOG"] = "TASK_LOG"
    task_id: str
    attempt: int
    lines: list[TaskLogEventLine]


class WorkerStatusChange(StreamEvent):
    type: Literal["WORKER_STATUS_CHANGE"] = "WORKER_STATUS_CHANGE"
    worker_id: str
    status: str
    data: dict[str, Any]


class OtherEvent(StreamEvent):
    type: Literal["EVENT"] = "EVENT"
    data: dict[str, Any]


# --- REST ------------------------------------------------------------------------------------------
class EventTicket(BaseModel):
    """A single-use credential for one WebSocket upgrade (`?ticket=`), for browsers, which cannot set
    headers on a WebSocket. It stands for the caller who asked for it, until it is used or expires."""

    ticket: str
    expires_at: datetime
    expires_in: int = Field(description="seconds")
