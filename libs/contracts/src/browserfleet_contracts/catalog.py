"""The event catalog: every `EventType` with the model of its `data` and that model's JSON Schema.

A closed list: a webhook endpoint may subscribe only to a type listed here (or a wildcard, `task.*`, `*`),
`GET /api/v1/webhooks/event-types` serves it, and AsyncAPI carries each payload schema among its components.
`libs/contracts/tests/test_catalog.py` fails when an `EventType` has no entry.

Two types are never delivered to webhooks (`webhooks=False`): `task.log` (every batch of log lines: the event
stream's business, far too chatty for an HTTP receiver) and `organization.deleted` (the organization and
its endpoints are gone by the time it would be sent). Wildcards skip them; naming one is refused.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from .events import (
    EventEnvelope,
    RequestBlockedData,
    TaskEventData,
    TaskLogEventData,
    event_filter_selects,
)
from .events import (
    EventType as E,
)
from .workers import WorkerEventData


class CredentialEventData(BaseModel):
    """Payload of credential.created / credential.updated / credential.deleted: names and types, never values."""

    name: str
    type: str | None = Field(default=None, description="password, api_key, totp_seed, ... (none on delete)")
    actor_user_id: str | None = Field(default=None, description="who changed it (a user or API key id)")


class OrganizationDeletedData(BaseModel):
    """Payload of organization.deleted (services drop the organization's data on it)."""

    organization_id: str
    slug: str | None = None


class WebhookEndpointDisabledData(BaseModel):
    """Payload of webhook.endpoint.disabled: an endpoint stopped receiving deliveries until an admin enables
    it again (its waiting deliveries are kept and go out then)."""

    endpoint_id: str
    url: str
    kind: Literal["endpoint", "task_url"] = Field(
        description="`task_url`: the implicit endpoint of tasks' `webhook_url`"
    )
    reason: Literal["gone", "failing"] = Field(
        description="`gone`: the receiver answered 410; `failing`: every delivery failed for the whole window"
    )
    detail: str
    failing_since: datetime | None = Field(description="the first failure since the last success")
    disabled_at: datetime


class WebhookTestData(BaseModel):
    """Payload of webhook.test: sent on demand to one endpoint ("send test event")."""

    endpoint_id: str
    message: str = "This is a test event from browserfleet."


@dataclass(frozen=True)
class CatalogEntry:
    event_type: E
    payload: type[BaseModel]
    description: str
    webhooks: bool = True


def _entry(t: E, payload: type[BaseModel], description: str, *, webhooks: bool = True) -> CatalogEntry:
    return CatalogEntry(t, payload, description, webhooks)


CATALOG: Final[Mapping[E, CatalogEntry]] = {
    e.event_type: e
    for e in (
        _entry(E.TASK_CREATED, TaskEventData, "A task was accepted and is queued."),
        _entry(E.TASK_STARTED, TaskEventData, "A worker claimed an attempt of the task and started it."),
        _entry(E.TASK_COMPLETED, TaskEventData, "The task finished successfully; `result` holds its output."),
        _entry(E.TASK_FAILED, TaskEventData, "An attempt failed (`error_message`); the task may be retried."),
        _entry(E.TASK_CANCELLED, TaskEventData, "The task was cancelled."),
        _entry(E.TASK_TIMED_OUT, TaskEventData, "The task ran or waited past its timeout."),
        _entry(
            E.TASK_LOG,
            TaskLogEventData,
            "Log lines of a running attempt (event stream only).",
            webhooks=False,
        ),
        _entry(E.WORKER_ONLINE, WorkerEventData, "A worker came online."),
        _entry(E.WORKER_OFFLINE, WorkerEventData, "A worker went offline (stopped, or stopped answering)."),
        _entry(
            E.WORKER_DRAINING,
            WorkerEventData,
            "A worker is draining: it finishes its tasks, takes no new ones.",
        ),
        _entry(E.WORKER_REVOKED, WorkerEventData, "A worker's key was revoked; it can no longer connect."),
        _entry(
            E.SECURITY_REQUEST_BLOCKED,
            RequestBlockedData,
            "Safe browsing refused a request of a task's browser (domain, internal address or budget).",
        ),
        _entry(E.CREDENTIAL_CREATED, CredentialEventData, "A credential was stored."),
        _entry(
            E.CREDENTIAL_UPDATED, CredentialEventData, "A credential's value or description was replaced."
        ),
        _entry(E.CREDENTIAL_DELETED, CredentialEventData, "A credential was removed."),
        _entry(
            E.ORGANIZATION_DELETED,
            OrganizationDeletedData,
            "The organization was deleted (internal).",
            webhooks=False,
        ),
        _entry(
            E.WEBHOOK_ENDPOINT_DISABLED,
            WebhookEndpointDisabledData,
            "A webhook endpoint was disabled (410 Gone, or failing for the whole failure window).",
        ),
        _entry(E.WEBHOOK_TEST, WebhookTestData, "A test event, sent to one endpoint on request."),
    )
}


class EventTypeInfo(BaseModel):
    """One entry of the catalog as `GET /api/v1/webhooks/event-types` serves it."""

    model_config = ConfigDict(populate_by_name=True)

    type: str = Field(description="e.g. task.completed")
    entity: str = Field(description="what `<entity>.*` subscribes to, e.g. task")
    description: str
    webhooks: bool = Field(description="whether webhook endpoints may receive it")
    payload_schema: dict[str, Any] = Field(alias="schema", description="JSON Schema of the event's `data`")


def entity(event_type: str) -> str:
    return event_type.split(".", 1)[0]


def payload_schema(event_type: E) -> dict[str, Any]:
    return CATALOG[event_type].payload.model_json_schema()


@functools.cache
def envelope_model(event_type: E) -> type[EventEnvelope]:
    """The EVENTS message of one type, its `data` typed (AsyncAPI documents each one: `TaskCompletedEvent`)."""
    name = "".join(part.capitalize() for part in event_type.value.replace("_", ".").split(".")) + "Event"
    model: type[EventEnvelope] = create_model(
        name,
        __base__=EventEnvelope,
        __doc__=CATALOG[event_type].description,
        type=(Literal[event_type.value], Field(description="entity.event")),  # type: ignore[arg-type]
        data=(CATALOG[event_type].payload, ...),
    )
    return model


def event_types() -> list[EventTypeInfo]:
    return [
        EventTypeInfo(
            type=e.event_type.value,
            entity=entity(e.event_type.value),
            description=e.description,
            webhooks=e.webhooks,
            payload_schema=payload_schema(e.event_type),
        )
        for e in CATALOG.values()
    ]


WEBHOOK_TYPES: Final = frozenset(e.event_type.value for e in CATALOG.values() if e.webhooks)
WEBHOOK_ENTITIES: Final = frozenset(entity(t) for t in WEBHOOK_TYPES)


def check_webhook_filter(event_filter: str) -> str:
    """`event_filter` if a webhook endpoint may subscribe to it: a catalogued type delivered to webhooks,
    `<entity>.*` of an entity with such a type, or `*`. Otherwise a ValueError naming it."""
    if event_filter == "*" or event_filter in WEBHOOK_TYPES:
        return event_filter
    name = event_filter[:80]
    if event_filter.endswith(".*") and entity(event_filter) in WEBHOOK_ENTITIES:
        return event_filter
    if event_filter in {t.value for t in CATALOG} or (
        event_filter.endswith(".*") and entity(event_filter) in {entity(t.value) for t in CATALOG}
    ):
        raise ValueError(f"{name!r} is not delivered to webhooks (see GET /api/v1/webhooks/event-types)")
    raise ValueError(
        f"{name!r} is not a known event type: use one of GET /api/v1/webhooks/event-types, <entity>.* or *"
    )


def webhook_selects(event_filter: str, event_type: str) -> bool:
    """Whether an endpoint subscribed to `event_filter` receives `event_type` (never a type kept from webhooks)."""
    return event_type in WEBHOOK_TYPES and event_filter_selects(event_filter, event_type)


def filters_selecting(event_type: str) -> list[str]:
    """Every filter that selects `event_type` for webhooks: itself, `<entity>.*` and `*` (none for a type kept
    from webhooks)."""
    if event_type not in WEBHOOK_TYPES:
        return []
    return sorted({event_type, f"{entity(event_type)}.*", "*"})
