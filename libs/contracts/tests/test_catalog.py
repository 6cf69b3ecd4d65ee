"""The event catalog: every EventType has a payload schema; webhook filters name catalogued types only."""

from __future__ import annotations

import pytest
from browserfleet_contracts import catalog
from browserfleet_contracts.events import EventEnvelope, EventType, TaskEventData
from browserfleet_contracts.webhooks import WebhookEndpointCreate, WebhookEndpointUpdate
from pydantic import ValidationError


def test_every_event_type_is_catalogued_with_an_object_schema() -> None:
    assert set(catalog.CATALOG) == set(EventType), "a new EventType needs its catalog entry (payload model)"
    for event_type, entry in catalog.CATALOG.items():
        assert entry.event_type is event_type
        schema = catalog.payload_schema(event_type)
        assert schema["type"] == "object" and schema["properties"], event_type
        assert entry.description


def test_the_issue_asks_for_these_types() -> None:
    wanted = {
        *(f"task.{s}" for s in ("created", "started", "completed", "failed", "cancelled", "timed_out")),
        *(f"worker.{s}" for s in ("online", "offline", "draining", "revoked")),
        "security.request_blocked",
        *(f"credential.{s}" for s in ("created", "updated", "deleted")),
        "webhook.endpoint.disabled",
    }
    assert wanted <= catalog.WEBHOOK_TYPES


def test_event_types_listing_carries_each_schema() -> None:
    listed = {t.type: t for t in catalog.event_types()}
    assert set(listed) == {e.value for e in EventType}
    completed = listed["task.completed"].model_dump(by_alias=True)
    assert completed["schema"] == TaskEventData.model_json_schema()
    assert (completed["entity"], completed["webhooks"]) == ("task", True)
    assert listed["task.log"].webhooks is False


@pytest.mark.parametrize(
    "accepted", ["*", "task.*", "task.completed", "worker.*", "webhook.endpoint.disabled", "webhook.*"]
)
def test_filters_a_webhook_may_subscribe_to(accepted: str) -> None:
    assert catalog.check_webhook_filter(accepted) == accepted


@pytest.mark.parametrize(
    ("refused", "why"),
    [
        ("task.exploded", "not a known event type"),
        ("nothing.*", "not a known event type"),
        ("Task.Completed", "not a known event type"),
        ("task.log", "not delivered to webhooks"),
        ("organization.deleted", "not delivered to webhooks"),
        ("organization.*", "not delivered to webhooks"),
    ],
)
def test_filters_a_webhook_may_not_subscribe_to(refused: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as exc:
        catalog.check_webhook_filter(refused)
    assert repr(refused) in str(exc.value)


def test_wildcards_select_only_webhook_types() -> None:
    assert catalog.webhook_selects("task.*", "task.completed")
    assert not catalog.webhook_selects("task.*", "task.log")
    assert not catalog.webhook_selects("*", "organization.deleted")
    assert catalog.webhook_selects("webhook.*", "webhook.endpoint.disabled")
    assert catalog.filters_selecting("webhook.endpoint.disabled") == [
        "*",
        "webhook.*",
        "webhook.endpoint.disabled",
    ]
    assert catalog.filters_selecting("task.log") == []


def test_endpoint_bodies_name_the_unknown_type() -> None:
    with pytest.raises(ValidationError) as exc:
        WebhookEndpointCreate.model_validate(
            {"url": "https://example.com/h", "events": ["task.*", "task.nope"]}
        )
    [error] = exc.value.errors()
    assert error["loc"] == ("events", 1)
    assert "'task.nope'" in error["msg"]
    with pytest.raises(ValidationError):
        WebhookEndpointUpdate.model_validate({})
    assert WebhookEndpointUpdate.model_validate({"events": ["*", "*"]}).events == ["*"]


def test_envelope_models_type_each_payload() -> None:
    model = catalog.envelope_model(EventType.TASK_COMPLETED)
    assert model.__name__ == "TaskCompletedEvent" and issubclass(model, EventEnvelope)
    assert (
        catalog.envelope_model(EventType.WEBHOOK_ENDPOINT_DISABLED).__name__ == "WebhookEndpointDisabledEvent"
    )
    with pytest.raises(ValidationError):
        model.model_validate(
            {
                "id": "x",
                "type": "task.failed",
                "org_id": "o",
                "occurred_at": "2025-01-01T00:00:00Z",
                "data": {},
            }
        )
