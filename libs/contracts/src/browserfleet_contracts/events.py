"""Domain events on the EVENTS stream (`events.<org_id>.<entity>.<event>`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
