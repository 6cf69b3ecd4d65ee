"""worker.* events on EVENTS (`events.<org_id>.worker.<event>`; a platform worker's under
`subjects.PLATFORM_EVENTS_ORG`), written to the outbox in the transaction of the change they announce, so
webhooks deliver them like task events. The id is stable per change (`workers.worker_event_id`), so a
re-publication is a duplicate JetStream drops."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from browserfleet_contracts import subjects
from browserfleet_contracts.events import EventEnvelope, EventType
from browserfleet_contracts.workers import WorkerEventData, WorkerStatus, worker_event_id
from browserfleet_core.db import AsyncSession
from browserfleet_core.outbox import OutboxRelay

from .models import Worker


class About(Protocol):
    """What an event says of its worker: a `models.Worker`, or `Seen` when only its values are at hand."""

    @property
    def id(self) -> str: ...
    @property
    def org_id(self) -> str | None: ...
    @property
    def name(self) -> str: ...
    @property
    def pool_name(self) -> str: ...
    @property
    def last_seen(self) -> datetime | None: ...


@dataclass(frozen=True)
class Seen:
    id: str
    org_id: str | None
    name: str
    pool_name: str
    last_seen: datetime | None


async def emit(
    relay: OutboxRelay,
    session: AsyncSession,
    worker: About,
    event: EventType,
    now: datetime,
    *,
    seq: int | None,
    status: WorkerStatus | None = None,
    reason: str | None = None,
) -> None:
    """`seq` numbers a presence change (online, offline, draining); None for the one-time worker.revoked."""
    org = worker.org_id or subjects.PLATFORM_EVENTS_ORG
    data = WorkerEventData(
        worker_id=worker.id,
        worker_name=worker.name,
        last_seen=worker.last_seen,
        pool=worker.pool_name,
        status=status or ("revoked" if event is EventType.WORKER_REVOKED else "offline"),
        reason=reason,
    )
    msg_id = worker_event_id(worker.id, event, seq)
    envelope = EventEnvelope(
        id=msg_id, type=event, org_id=org, occurred_at=now, data=data.model_dump(mode="json")
    )
    await relay.enqueue(session, subjects.event(org, event), envelope, msg_id)


async def go_offline(
    session: AsyncSession, relay: OutboxRelay, worker: Worker, now: datetime, reason: str | None
) -> None:
    """A worker seen online becomes offline, with its worker.offline (a clean stop, or it left for good)."""
    if worker.presence == "online":
        worker.presence, worker.presence_seq = "offline", worker.presence_seq + 1
        await emit(
            relay, session, worker, EventType.WORKER_OFFLINE, now, seq=worker.presence_seq, reason=reason
        )
