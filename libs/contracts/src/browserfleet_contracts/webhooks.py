"""Webhook endpoints and their delivery log."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, Field, HttpUrl, field_validator

from .common import Contract, OrgScoped

EVENT_FILTER_PATTERN = r"^(\*|[a-z_]+\.(\*|[a-z_]+))$"


class WebhookEndpointCreate(Contract):
    url: HttpUrl
    events: list[str] = Field(default_factory=lambda: ["task.completed"], min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)

    @field_validator("events")
    @classmethod
    def _filters(cls, v: list[str]) -> list[str]:
        for e in v:
            if not re.match(EVENT_FILTER_PATTERN, e):
                raise ValueError(f"{e!r} is not an event type like task.completed, task.* or *")
        return sorted(set(v))


class WebhookEndpointPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    created_at: datetime
    secret: str | None = Field(default=None, description="whsec_… shown only when the endpoint is created")


class CreateEndpointRequest(OrgScoped):
    endpoint: WebhookEndpointCreate


class ListDeliveriesRequest(OrgScoped):
    endpoint_id: str | None = None
    limit: int = Field(default=50, ge=1, le=500)


class WebhookDeliveryPublic(BaseModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    attempt: int
    status: str
    status_code: int | None
    latency_ms: float | None
    error: str | None
    created_at: datetime
    next_attempt_at: datetime | None = None
