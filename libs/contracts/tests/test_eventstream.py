"""The event stream's client messages refuse what they must, naming the field; event filters select as
documented."""

from __future__ import annotations

from typing import Any

import pytest
from browserfleet_contracts.events import event_filter_selects
from browserfleet_contracts.eventstream import (
    MAX_TYPE_FILTERS,
    ClientMessage,
    PingMessage,
    SubscribeMessage,
    channel,
)
from pydantic import TypeAdapter, ValidationError

CLIENT: TypeAdapter[Any] = TypeAdapter(ClientMessage)


def test_a_subscribe_message_parses_by_its_type() -> None:
    msg = CLIENT.validate_python(
        {"type": "SUBSCRIBE", "channel": channel("o1"), "types": ["worker.*", "task.*", "task.*"], "since": 7}
    )
    assert isinstance(msg, SubscribeMessage)
    assert (msg.channel, msg.types, msg.since) == ("org:o1", ["task.*", "worker.*"], 7)
    assert isinstance(CLIENT.validate_python({"type": "PING"}), PingMessage)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"types": ["task."]}, "types"),
        ({"types": ["TASK.*"]}, "types"),
        ({"types": ["task.*"] * (MAX_TYPE_FILTERS + 1)}, "types"),
        ({"task_id": "../x"}, "task_id"),
        ({"task_id": "x" * 65}, "task_id"),
        ({"since": -1}, "since"),
        ({"since": "soon"}, "since"),
        ({"extra": 1}, "extra"),
        ({"channel": "x" * 129}, "channel"),
    ],
)
def test_a_bad_subscribe_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CLIENT.validate_python({"type": "SUBSCRIBE", "channel": "org:o1", **body})
    assert caught.value.errors()[0]["loc"][1] == field


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        CLIENT.validate_python({"type": "HELLO"})
    assert caught.value.errors()[0]["type"] == "union_tag_invalid"


@pytest.mark.parametrize(
    ("event_filter", "event_type", "expected"),
    [
        ("*", "task.completed", True),
        ("task.*", "task.completed", True),
        ("task.*", "taskx.completed", False),
        ("task.completed", "task.completed", True),
        ("task.completed", "task.failed", False),
        ("worker.*", "task.completed", False),
        ("webhook.*", "webhook.endpoint.disabled", True),
    ],
)
def test_event_filters(event_filter: str, event_type: str, expected: bool) -> None:
    assert event_filter_selects(event_filter, event_type) is expected
