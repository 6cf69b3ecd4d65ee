"""Domain events on the EVENTS stream (`events.<org_id>.<entity>.<event>`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class EventEnvelope(BaseModel):
    """One domain event. `id` is stable across re-publication (it is the JetStream Nats-Msg-Id)."""

    id: str
    type: str = Field(description="entity.event, e.g. task.completed")
    org_id: str
    occurred_at: datetime
    data: dict[str, Any]


class TaskEventData(BaseModel):
    """The seed's payload for task.* events."""

    task_id: str
    status: str
    worker_id: str | None = None
    result: dict[str, Any] | None = None
    error_message: str | None = None
    execution_time: float | None = None
    attempt: int | None = None


SECURITY_REQUEST_BLOCKED = "security.request_blocked"


class RequestBlockedData(BaseModel):
    """Payload of `security.request_blocked`: a task's browser tried to reach something safe browsing
    refused (outside the task's or the organization's allowed domains, an internal address, or past its
    transfer budget). Hosts, reasons and query-less URLs only, masked of the task's secrets.

    A worker sends the first few blocked requests of an attempt one by one and then a single summary
    (`summary: true`, `suppressed` = how many more it did not send), so a hostile page cannot flood EVENTS.
    """

    task_id: str
    attempt: int
    seq: int = Field(description="1-based number of this event within the attempt (the summary is last)")
    kind: Literal["domain", "address", "budget", "summary"]
    host: str = Field(description="the host asked for; `*` on a budget event and on the summary")
    reason: str
    url: str | None = Field(
        default=None,
        description="scheme://host[:port]/path without query, fragment or credentials; none for a tunnel "
        "(HTTPS, WebSocket over TLS), whose path the worker never sees",
    )
    summary: bool = False
    suppressed: int = Field(default=0, ge=0, description="blocked requests not sent one by one (summary)")
    hosts: list[str] = Field(default_factory=list, description="distinct hosts among them (summary, ≤ 20)")
