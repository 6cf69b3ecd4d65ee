"""Task lifecycle commands beyond create/get: cancel, admin lists with filters, attempts and logs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from .common import OrgScoped
from .tasks import WORKER_TAG_PATTERN, Priority, TaskStatus


class CancelTaskRequest(OrgScoped):
    task_id: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(default=None, max_length=500)


class AdminListTasksRequest(OrgScoped):
    """`GET /admin/tasks`: every filter optional, newest first, keyset cursor."""

    status: TaskStatus | None = None
    priority: Priority | None = None
    worker_id: str | None = Field(default=None, max_length=64)
    tag: Annotated[str, Field(pattern=WORKER_TAG_PATTERN)] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


AttemptStatus = Literal["running", "completed", "failed", "lost", "cancelled", "timed_out"]


class TaskAttemptPublic(BaseModel):
    attempt: int
    worker_id: str | None
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class GetTaskAttemptsRequest(OrgScoped):
    task_id: str = Field(min_length=1, max_length=64)


class TaskLogPublic(BaseModel):
    id: int = Field(description="monotonic; pass the last one seen as `since` to follow")
    attempt: int
    level: str
    message: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    at: datetime


class ListTaskLogsRequest(OrgScoped):
    task_id: str = Field(min_length=1, max_length=64)
    since: int = Field(default=0, ge=0, description="only lines with a larger id (follow cursor)")
    limit: int = Field(default=200, ge=1, le=1000)


class TaskLogPage(BaseModel):
    items: list[TaskLogPublic]
    next_since: int = Field(description="the cursor for the next call; equals `since` when nothing is new")
    finished: bool = Field(description="the task is terminal: no more lines will come")


class ArtifactPublic(BaseModel):
    """One artifact of a task, as `GET /api/v1/tasks/{id}/artifacts` lists it (the bytes are at `url`)."""

    name: str
    content_type: str
    size: int = Field(description="bytes")
    attempt: int | None = Field(default=None, description="the attempt that stored it")
    url: str = Field(description="download path: GET streams the bytes")
