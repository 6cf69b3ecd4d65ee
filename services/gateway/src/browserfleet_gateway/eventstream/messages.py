"""Domain events from EVENTS as the WebSocket messages clients receive: parsed and serialised once per event,
whatever the number of sockets it goes to."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from browserfleet_contracts.events import EventType
from browserfleet_contracts.eventstream import (
    OtherEvent,
    StreamEvent,
    TaskLog,
    TaskStatusChange,
    WorkerStatusChange,
)
from pydantic import ValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One EVENTS message, ready to send: `text` is the client's message; the rest is what filters read."""

    seq: int
    org_id: str
    type: str
    task_id: str | None
    text: str


def org_of(subject: str) -> str | None:
    """The organization token of `events.<org_id>.<type>`."""
    parts = subject.split(".", 2)
    return parts[1] if len(parts) == 3 and parts[0] == "events" and parts[1] else None


def parse(seq: int, subject: str, payload: bytes) -> Event | None:
    """The event stored at `seq`, or None for a message that is not an event envelope (logged, skipped: one
    bad message must not stop the stream for everyone). The organization is the subject's, which is what
    both the live fan-out and a replay's consumer filter (`events.<org>.>`) read."""
    org_id = org_of(subject)
    try:
        doc = json.loads(payload)
        event_type = doc["type"]
        occurred_at = doc["occurred_at"]
        data = doc.get("data") or {}
        if not isinstance(event_type, str) or not isinstance(data, dict) or org_id is None:
            raise TypeError("not an event envelope")
        message = _message(seq, event_type, occurred_at, data)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("EVENTS #%d on %s is not an event envelope (%s); skipped", seq, subject, exc)
        return None
    task_id = data.get("task_id")
    return Event(
        seq=seq,
        org_id=org_id,
        type=event_type,
        task_id=task_id if isinstance(task_id, str) else None,
        text=message.model_dump_json(),
    )


def _message(seq: int, event_type: str, occurred_at: Any, data: dict[str, Any]) -> StreamEvent:
    base = {"seq": seq, "timestamp": occurred_at, "event": event_type}
    entity, _, name = event_type.partition(".")
    try:
        if event_type == EventType.TASK_LOG:
            return TaskLog(**base, task_id=data["task_id"], attempt=data["attempt"], lines=data["lines"])
        if entity == "task":
            return TaskStatusChange(
                **base,
                task_id=data["task_id"],
                status=data.get("status") or name,
                attempt=data.get("attempt"),
                worker_id=data.get("worker_id"),
                data=data,
            )
        if entity == "worker":
            return WorkerStatusChange(
                **base, worker_id=data["worker_id"], status=data.get("status") or name, data=data
            )
    except (KeyError, ValidationError) as exc:
        # a known entity without the fields its message needs still reaches the client, as a plain event
        log.warning("EVENTS #%d (%s) lacks what its message needs (%s); sent as EVENT", seq, event_type, exc)
    return OtherEvent(**base, data=data)
