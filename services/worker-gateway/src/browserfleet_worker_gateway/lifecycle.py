"""What an admin does to one of the organization's workers: drain it (no new tasks; the worker is told on
`workers.drain.<id>` and by its next heartbeat's reply) or remove it (its key stops working at once, and
worker.revoked lets the scheduler give its running attempts back). A platform worker, or another org's, is
a 404 here: the operator manages those."""

from __future__ import annotations

import logging
from datetime import datetime

from browserfleet_contracts.common import ById
from browserfleet_contracts.events import EventType
from browserfleet_contracts.workers import WorkerPublic
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.lookup import found
from browserfleet_core.outbox import OutboxRelay

from . import events, repository
from .invites import require_admin
from .models import Worker
from .presence import start_draining, to_public

log = logging.getLogger(__name__)


async def _org_worker(session: AsyncSession, req: ById) -> Worker:
    require_admin(req.actor)
    worker = await repository.org_worker(session, req.actor.org_id, req.id)
    return found(worker, "worker not found", code="worker_not_found")


async def drain(
    session: AsyncSession,
    relay: OutboxRelay,
    req: ById,
    *,
    offline_after_seconds: float,
    now: datetime | None = None,
) -> WorkerPublic:
    """Idempotent: a worker already draining is left as it is (one worker.draining per drain)."""
    now = now or utcnow()
    worker = await _org_worker(session, req)
    if worker.drain_requested_at is None:
        await start_draining(session, relay, worker, now, "requested by an admin")
        worker.drain_requested_at = now
        await repository.add(session, worker)
        log.info("worker %s asked to drain", worker.id)
    return to_public(worker, now, offline_after_seconds)


async def revoke(session: AsyncSession, relay: OutboxRelay, req: ById, now: datetime | None = None) -> Worker:
    """The worker's key stops working in this commit; returns the worker for the `workers.revoked`
    broadcast that clears the other services' caches."""
    now = now or utcnow()
    worker = await _org_worker(session, req)
    worker.revoked_at, worker.removed_reason = now, "revoked"
    await events.emit(
        relay, session, worker, EventType.WORKER_REVOKED, now, seq=None, reason="removed by an admin"
    )
    await repository.add(session, worker)
    log.info("worker %s (%s) revoked", worker.id, worker.name)
    return worker
