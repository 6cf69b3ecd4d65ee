"""Task events (`task.*` on EVENTS), written to the outbox in the transaction of the change they announce.

The message id (`task_event_id`) is stable, so a re-publication (outbox replay after a crash) is a
duplicate JetStream drops."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.events import (
    EventEnvelope,
    EventType,
    TaskEventData,
    TaskLogEventData,
    TaskLogEventLine,
    log_event_id,
    task_event_id,
)
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.projection import project
from pydantic import BaseModel

from .models import Task

OutboxMessage = tuple[str, EventEnvelope, str]
# a `task.log` event carries at most this much line text, so a result that brings every line of a long attempt
# again (those the worker could not ship) becomes several events, each well under NATS' 1 MiB payload limit
LOG_EVENT_TEXT_BYTES = 256 * 1024


def task_data(task: Task) -> TaskEventData:
    return project(TaskEventData, task, task_id=task.id, execution_time=task.execution_time_seconds)


def message(
    org_id: str,
    event: EventType,
    data: TaskEventData,
    attempt: int | None = None,
    *,
    webhook_url: str | None = None,
) -> OutboxMessage:
    """(subject, envelope, msg id) of a task event; `attempt` for an event each attempt may have. The task's
    own `webhook_url` rides on the envelope (webhooks delivers the event there too), never in `data`."""
    return _outbox_message(org_id, event, task_event_id(data.task_id, event, attempt), data, webhook_url)


def _outbox_message(
    org_id: str, event: EventType, msg_id: str, data: BaseModel, webhook_url: str | None = None
) -> OutboxMessage:
    envelope = EventEnvelope(
        id=msg_id,
        type=event,
        org_id=org_id,
        occurred_at=utcnow(),
        data=data.model_dump(mode="json"),
        webhook_url=webhook_url,
    )
    return subjects.event(org_id, event), envelope, msg_id


_ORG = "\x00org\x00"


def started_template(task_id: str, worker_id: str, attempt: int, now: datetime) -> tuple[str, str, str, str]:
    """The `task.started` event of a claim before its row is read, for `repository.claim_many`: the
    subject's halves around the org (from `subjects.event`, the one declaration of the subject), the msg id,
    and the envelope as JSON with the org and webhook_url still to be filled in by the statement."""
    data = TaskEventData(task_id=task_id, status="running", worker_id=worker_id, attempt=attempt)
    msg_id = task_event_id(task_id, EventType.TASK_STARTED, attempt)
    envelope = EventEnvelope(
        id=msg_id,
        type=EventType.TASK_STARTED,
        org_id="",
        occurred_at=now,
        data=data.model_dump(mode="json"),
    )
    head, tail = subjects.event(_ORG, EventType.TASK_STARTED).split(_ORG)
    return head, tail, msg_id, envelope.model_dump_json()


def finished_template(
    task_id: str,
    worker_id: str,
    attempt: int,
    status: str,
    error_message: str | None,
    per_attempt: bool,
    now: datetime,
) -> tuple[str, str, str, str]:
    """The event of a result that ends a running attempt (`task.completed`, `task.failed`,
    `task.timed_out`), before its row is written, for `repository.results.FINISH`: as `started_template`,
    with `data.result` and `data.execution_time` also left to the statement (the values it stores)."""
    event = EventType.task(status)
    data = TaskEventData(
        task_id=task_id, status=status, worker_id=worker_id, error_message=error_message, attempt=attempt
    )
    msg_id = task_event_id(task_id, event, attempt if per_attempt else None)
    envelope = EventEnvelope(
        id=msg_id, type=event, org_id="", occurred_at=now, data=data.model_dump(mode="json")
    )
    head, tail = subjects.event(_ORG, event).split(_ORG)
    return head, tail, msg_id, envelope.model_dump_json()


def task_message(task: Task, event: EventType, attempt: int | None = None) -> OutboxMessage:
    return message(task.org_id, event, task_data(task), attempt, webhook_url=task.webhook_url)


async def emit(
    relay: OutboxRelay, session: AsyncSession, task: Task, event: EventType, attempt: int | None = None
) -> None:
    await relay.enqueue(session, *task_message(task, event, attempt))


def log_messages(
    org_id: str, task_id: str, attempt: int, rows: Sequence[Mapping[str, Any]]
) -> list[OutboxMessage]:
    """`task.log` events for log lines just stored (rows in line order): one event per
    `LOG_EVENT_TEXT_BYTES` of text, each with the id of its first line, so a re-sent line, which is never
    stored twice, can never announce a second event."""
    out: list[OutboxMessage] = []
    chunk: list[TaskLogEventLine] = []
    size = 0
    for row in rows:
        line = TaskLogEventLine(seq=row["seq"], level=row["level"], message=row["message"], ts=row["at"])
        if chunk and size + len(line.message) > LOG_EVENT_TEXT_BYTES:
            out.append(_log_message(org_id, task_id, attempt, chunk))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line.message)
    if chunk:
        out.append(_log_message(org_id, task_id, attempt, chunk))
    return out


def _log_message(org_id: str, task_id: str, attempt: int, lines: list[TaskLogEventLine]) -> OutboxMessage:
    data = TaskLogEventData(task_id=task_id, attempt=attempt, lines=lines)
    return _outbox_message(org_id, EventType.TASK_LOG, log_event_id(task_id, attempt, lines[0].seq), data)
