"""Webhook endpoints, their signing secrets, deliveries with their attempt log, replays and test events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, HttpUrl, field_validator, model_validator

from .catalog import check_webhook_filter
from .common import ById, Contract, OrgScoped
from .events import EventType

# a catalogued type delivered to webhooks, `<entity>.*` or `*`; anything else is a 422 naming it
EventFilter = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(check_webhook_filter)]
EndpointKind = Literal["endpoint", "task_url"]
# `failed`: the last attempt failed and another is scheduled; `dead`: every scheduled attempt failed
DeliveryStatus = Literal["pending", "succeeded", "failed", "dead"]
CircuitState = Literal["closed", "open", "half_open"]


def endpoint_event_id(endpoint_id: str, event: EventType, at: datetime) -> str:
    """Id (and `Nats-Msg-Id`) of an event about an endpoint (`webhook.endpoint.disabled`): one per change."""
    return f"{endpoint_id}:{event.value}:{at.isoformat()}"


def webhook_test_event_id(endpoint_id: str, request_id: str) -> str:
    """The `webhook-id` of a test event (`webhook.test`), one per "send test event" call."""
    return f"{endpoint_id}:test:{request_id}"


def _filters(v: list[str]) -> list[str]:
    return sorted(set(v))


class WebhookEndpointCreate(Contract):
    url: HttpUrl
    events: list[EventFilter] = Field(default_factory=lambda: ["task.completed"], min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)

    _events = field_validator("events")(_filters)


class WebhookEndpointUpdate(Contract):
    """Only the fields given (not null) change; `description: ""` clears it. Enabling a disabled endpoint sends
    what waited for it; disabling keeps its deliveries waiting (nothing is dropped)."""

    url: HttpUrl | None = None
    events: list[EventFilter] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _filters(v)

    @model_validator(mode="after")
    def _something(self) -> WebhookEndpointUpdate:
        if self.url is None and self.events is None and self.description is None and self.enabled is None:
            raise ValueError("give at least one of url, events, description, enabled")
        return self


class WebhookEndpointPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    kind: EndpointKind = Field(
        default="endpoint",
        description="`task_url`: the implicit endpoint of tasks' `webhook_url` (signed with the org's secret)",
    )
    created_at: datetime
    updated_at: datetime | None = None
    disabled_reason: str | None = Field(default=None, description="why it was disabled: gone, failing, admin")
    disabled_at: datetime | None = None
    failing_since: datetime | None = Field(
        default=None, description="first failed attempt since the last success (none while healthy)"
    )
    circuit: CircuitState = Field(
        default="closed",
        description="open: deliveries wait, one probe per cool-down decides when they resume",
    )
    secret: str | None = Field(default=None, description="whsec_… shown only when the endpoint is created")


class CreateEndpointRequest(OrgScoped):
    endpoint: WebhookEndpointCreate


class UpdateEndpointRequest(ById):
    endpoint: WebhookEndpointUpdate


class WebhookSecretPublic(BaseModel):
    """A signing secret (an endpoint's, or the organization's for tasks' `webhook_url`)."""

    secret: str = Field(description="whsec_…: base64 of the HMAC key after the prefix")
    created_at: datetime
    previous_expires_at: datetime | None = Field(
        default=None,
        description="while set and in the future, deliveries carry a signature with the previous secret too",
    )


class ListDeliveriesRequest(OrgScoped):
    endpoint_id: str | None = Field(default=None, max_length=64)
    status: DeliveryStatus | None = None
    limit: int = Field(default=50, ge=1, le=500)


class WebhookDeliveryPublic(BaseModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    attempt: int = Field(description="HTTP attempts made so far (replays included)")
    status: DeliveryStatus
    status_code: int | None
    latency_ms: float | None
    error: str | None
    created_at: datetime
    next_attempt_at: datetime | None = None


class WebhookAttemptPublic(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None = Field(description="none when no HTTP answer came (refused, timed out)")
    latency_ms: float | None
    error: str | None
    response: str | None = Field(description="the start of the receiver's answer (a few hundred bytes)")


class WebhookDeliveryDetail(WebhookDeliveryPublic):
    payload: dict[str, Any] = Field(description="the body sent, as JSON")
    attempts: list[WebhookAttemptPublic]


class ReplayFailedCreate(Contract):
    since: datetime = Field(description="deliveries created at or after this time (with a time zone)")

    @field_validator("since")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("since needs a time zone, e.g. 2025-01-01T00:00:00Z")
        return v


class ReplayFailedRequest(OrgScoped):
    endpoint_id: str = Field(min_length=1, max_length=64)
    replay: ReplayFailedCreate


class ReplayJobPublic(BaseModel):
    """A background replay of every failed (`failed` or `dead`) delivery of one endpoint since a time."""

    id: str
    endpoint_id: str
    since: datetime
    status: Literal["running", "completed"]
    total: int = Field(description="failed deliveries the job found when it started")
    replayed: int = Field(description="of those, how many are queued again so far")
    created_at: datetime
    finished_at: datetime | None = None
