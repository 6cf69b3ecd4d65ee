"""Who sent a worker update, and whether it may speak for the attempt (docs/architecture.md "Securing the bus").

An update travels on `tasks.updates.<worker_id>.<task_id>`, and a worker's bus identity may publish only
under its own id, so the subject names the sender. An update whose body claims another worker is refused
here; one from a worker that does not hold the attempt it reports on (a compromised worker speaking on its
own subject about someone else's task) is refused by the outcome code. Either way nothing changes: the
update is acknowledged, counted in browserfleet_scheduler_refused_updates_total and logged.

Security reports (`kind="security"`: a request the worker's safe browsing refused) become
`security.request_blocked` events of the task's organization, through the outbox, from the attempt's worker
only: workers may not publish on EVENTS themselves.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.events import EventEnvelope, EventType, RequestBlockedData, blocked_event_id
from browserfleet_contracts.tasks import TaskUpdateMessage
from nats.aio.msg import Msg
from prometheus_client import Counter
from pydantic import ValidationError

from .models import Task

log = logging.getLogger(__name__)

REFUSED = Counter(
    "browserfleet_scheduler_refused_updates_total",
    "Worker updates recorded as nothing: sent under another worker's name, or about an attempt the sender "
    "does not hold",
    ["reason"],
)


def from_its_sender(msg: Msg, update: TaskUpdateMessage) -> bool:
    """Whether the update's body names the worker its subject names (the sender)."""
    sender = subjects.task_update_worker(msg.subject)
    if sender is not None and sender == update.worker_id:
        return True
    REFUSED.labels("subject").inc()
    log.warning(
        "refused a %s update for task %s: sent on %s but claiming worker %s",
        update.kind, update.task_id, msg.subject, update.worker_id,
    )  # fmt: skip
    return False


def not_claimant(task: Task, update: TaskUpdateMessage, holder: str | None) -> None:
    """Counts and logs an update from a worker that does not hold the attempt it reports on."""
    REFUSED.labels("claimant").inc()
    log.warning(
        "refused a %s update for task %s attempt %d from worker %s: the attempt is held by %s",
        update.kind, task.id, update.attempt, update.worker_id, holder,
    )  # fmt: skip


def security_event(
    task: Task, update: TaskUpdateMessage, now: datetime
) -> tuple[str, EventEnvelope, str] | None:
    """The outbox message (subject, envelope, msg id) of a security report, for the task's organization and
    this very attempt whatever the report says; None for a report that does not parse."""
    try:
        data = RequestBlockedData.model_validate(
            {**(update.security or {}), "task_id": task.id, "attempt": update.attempt}
        )
    except ValidationError as exc:
        log.warning("dropping a malformed security report for task %s: %s", task.id, exc.errors()[:2])
        return None
    suffix: Any = "summary" if data.summary else data.seq
    event_id = blocked_event_id(task.id, update.attempt, suffix)
    envelope = EventEnvelope(
        id=event_id,
        type=EventType.SECURITY_REQUEST_BLOCKED,
        org_id=task.org_id,
        occurred_at=now,
        data=data.model_dump(mode="json"),
    )
    return subjects.event(task.org_id, EventType.SECURITY_REQUEST_BLOCKED), envelope, event_id
