"""A removed worker's running attempts are given back at once (worker.revoked on EVENTS, its own durable
consumer), instead of after its lease runs out, which a revoked worker that keeps its connection would extend
forever: each attempt is lost (attempt + 1 queued after the backoff, or the task fails with the cause once
max_attempts is spent), and the worker is told to stop it (`tasks.cancel.<id>`); its late result is ignored,
the attempt being no longer current. Idempotent: a redelivered event finds nothing running on that worker."""

from __future__ import annotations

import logging
from datetime import datetime

from browserfleet_contracts import subjects
from browserfleet_contracts.events import EventEnvelope, EventType
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.event_consumer import events_subscriber
from browserfleet_core.outbox import OutboxRelay
from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsMessage
from pydantic import ValidationError

from . import attempts, repository
from .policy import Policy
from .runtime import Runtime

log = logging.getLogger(__name__)

DURABLE = "scheduler-worker-revoked"
WORKER_REVOKED_ALL = subjects.event("*", EventType.WORKER_REVOKED)
RETRY_SECONDS = 2.0


async def give_back(
    session: AsyncSession, relay: OutboxRelay, policy: Policy, worker_id: str, now: datetime | None = None
) -> list[str]:
    """Lose every running attempt of `worker_id`; returns the ids of those tasks."""
    now = now or utcnow()
    tasks = await repository.running_tasks_of(session, worker_id)
    for task in tasks:
        await attempts.lose(session, relay, task, policy, now, f"worker {worker_id} was removed")
    return [t.id for t in tasks]


def build_worker_events_router(rt: Runtime) -> NatsRouter:
    router = NatsRouter()

    # a consumer made after a revocation still sees it (an old one finds nothing running: harmless)
    @events_subscriber(
        router,
        WORKER_REVOKED_ALL,
        DURABLE,
        batch_size=8,
        title="scheduler.worker_revoked",
        description="worker.revoked (EventEnvelope): the removed worker's running attempts are given back.",
    )
    async def on_worker_revoked(msg: NatsMessage) -> None:
        try:
            worker_id = str(EventEnvelope.model_validate_json(msg.body).data["worker_id"])
        except (ValidationError, KeyError) as exc:
            log.error("dropping a malformed worker.revoked on %s: %s", msg.raw_message.subject, exc)
            await msg.reject()
            return
        try:
            given_back = await rt.db.run(give_back, rt.relay, rt.policy, worker_id)
        except Exception:
            log.exception(
                "giving back the attempts of worker %s failed; the event will be offered again", worker_id
            )
            await msg.nack(delay=RETRY_SECONDS)
            return
        for task_id in given_back:
            await rt.cancel_signal(task_id)
        if given_back:
            log.warning("worker %s was removed: %d running attempt(s) given back", worker_id, len(given_back))
            rt.wake.set()
        await msg.ack()

    return router
