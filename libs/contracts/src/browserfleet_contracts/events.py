"""Domain events on the EVENTS stream (`events.<org_id>.<entity>.<event>`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from .tasks import LogLevel

# what a subscriber names to select events (webhook endpoints, the WebSocket event stream): one type
# (`task.completed`, `webhook.endpoint.disabled`), every type of one entity (`task.*`), or everything (`*`)
EVENT_FILTER_PATTERN = r"^(\*|[a-z_]+\.(\*|[a-z_]+(\.[a-z_]+)*))$"


def event_filter_selects(event_filter: str, event_type: str) -> bool:
    """Whether `event_filter` (see EVENT_FILTER_PATTERN) selects events of `event_type`."""
    if event_filter == "*" or event_filter == event_type:
        return True
    entity, _, name = event_filter.partition(".")
    return name == "*" and event_type.startswith(entity + ".")


class EventType(StrEnum):
    """Every domain event type the platform publishes on EVENTS: a closed list (`entity.event`)."""

    TASK_CREATED = "task.created"
    TASK_STARTED = "task.started"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_CANCELLED = "task.cancelled"
    TASK_TIMED_OUT = "task.timed_out"
    TASK_LOG = "task.log"
    ORGANIZATION_DELETED = "organization.deleted"
    SECURITY_REQUEST_BLOCKED = "security.request_blocked"
    WORKER_ONLINE = "worker.online"
    WORKER_OFFLINE = "worker.offline"
    WORKER_DRAINING = "worker.draining"
    WORKER_REVOKED = "worker.revoked"
    CREDENTIAL_CREATED = "credential.created"
    CREDENTIAL_UPDATED = "credential.updated"
    CREDENTIAL_DELETED = "credential.deleted"
    WEBHOOK_ENDPOINT_DISABLED = "webhook.endpoint.disabled"
    # sent only by "send test event", to the one endpoint asked; never published on EVENTS
    WEBHOOK_TEST = "webhook.test"

    @classmethod
    def task(cls, status: str) -> EventType:
        """The event announcing that a task reached `status` (`task.<status>`)."""
        return cls(f"task.{status}")


class EventEnvelope(BaseModel):
    """One domain event. `id` is stable across re-publication (it is the JetStream Nats-Msg-Id)."""

    id: str
    type: EventType = Field(description="entity.event, e.g. task.completed")
    org_id: str
    occurred_at: datetime
    data: dict[str, Any]
    webhook_url: str | None = Field(
        default=None,
        description="task.* only: the task's own `webhook_url`, where webhooks delivers the event too (signed "
        "with the organization's secret). On the envelope, not in `data`, so no other endpoint receives it",
    )


class TaskEventData(BaseModel):
    """The seed's payload for task.* events."""

    task_id: str
    status: str
    worker_id: str | None = None
    result: dict[str, Any] | None = None
    error_message: str | None = None
    execution_time: float | None = None
    attempt: int | None = None


def task_event_id(task_id: str, event: EventType, attempt: int | None = None) -> str:
    """Stable id (and `Nats-Msg-Id`) of a task event: per attempt for the events an attempt can repeat
    (`started`, `completed`, `failed`), per task for those that happen once (`created`, `cancelled`,
    `timed_out`)."""
    name = event.value.removeprefix("task.")
    return f"{task_id}:{name}" if attempt is None else f"{task_id}:{attempt}:{name}"


def log_event_id(task_id: str, attempt: int, first_seq: int) -> str:
    """Id of a `task.log` event: the attempt's lines from `first_seq` on, as the scheduler stored them in one
    transaction. A stored line is stored once, so no two events start at the same line."""
    return f"{task_id}:{attempt}:log:{first_seq}"


def org_event_id(org_id: str, event: EventType) -> str:
    """Stable id of an organization-wide event such as `organization.deleted`."""
    return f"{org_id}:{event.value}"


def blocked_event_id(task_id: str, attempt: int, suffix: str | int) -> str:
    """Id of a `security.request_blocked` event: the attempt's n-th (or its summary)."""
    return f"{task_id}:{attempt}:blocked:{suffix}"


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


class TaskLogEventLine(BaseModel):
    seq: int = Field(description="the line's number within the attempt (0-based)")
    level: LogLevel
    message: str
    ts: datetime = Field(description="when the worker wrote the line")


class TaskLogEventData(BaseModel):
    """Payload of `task.log`: log lines of one attempt the scheduler has just stored, in order. One event per
    batch the worker shipped (split when large), so a follower sees lines as the task writes them."""

    task_id: str
    attempt: int
    lines: list[TaskLogEventLine]
