"""Presence: heartbeats, a worker's own status reports, the sweep that notices silent workers, and the status
admins see. A worker's `presence` is what the last worker.online / worker.offline event said, so each change
is announced once: the beat after a silence is a worker.online, a silence after a beat a worker.offline."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from browserfleet_contracts.common import Actor
from browserfleet_contracts.events import EventType
from browserfleet_contracts.workers import (
    DeviceInfo,
    Heartbeat,
    HeartbeatReply,
    WorkerPublic,
    WorkerStatus,
    WorkerStatusRequest,
)
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import Unauthorized
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.projection import project
from browserfleet_core.security import hash_token
from prometheus_client import Gauge

from . import events, repository
from .models import Worker
from .registration import INVALID_KEY, own_worker

log = logging.getLogger(__name__)

# read from the database, so every replica exports the whole fleet's number: the dashboard takes max() of
# the replicas, not their sum
WORKERS_ONLINE = Gauge(
    "browserfleet_workers_online", "Workers with a live heartbeat, remote ones included (the whole fleet)"
)


def is_draining(worker: Worker) -> bool:
    return worker.drain_requested_at is not None or worker.reported_status == "draining"


def worker_status(worker: Worker, now: datetime, offline_after_seconds: float) -> WorkerStatus:
    if (
        worker.presence == "offline"
        or worker.last_seen is None
        or now - worker.last_seen > timedelta(seconds=offline_after_seconds)
    ):
        return "offline"
    if is_draining(worker):
        return "draining"
    if worker.reported_status == "error":
        return "error"
    if worker.running_tasks > 0 or worker.reported_status == "busy":
        return "busy"
    return "online"


def to_public(worker: Worker, now: datetime, offline_after_seconds: float) -> WorkerPublic:
    status = worker_status(worker, now, offline_after_seconds)
    return project(
        WorkerPublic,
        worker,
        pool=worker.pool_name,
        status=status,
        state=status,
        device_info=DeviceInfo.model_validate(worker.device_info) if worker.device_info else None,
    )


async def heartbeat(
    session: AsyncSession, relay: OutboxRelay, body: Heartbeat, now: datetime | None = None
) -> HeartbeatReply:
    """One statement on the hot path; a worker coming back also writes its worker.online event."""
    now = now or utcnow()
    row = await repository.record_heartbeat(
        session,
        hash_token(body.worker_key),
        now=now,
        busy=body.busy,
        running_tasks=body.running_tasks,
        slots=body.slots,
    )
    if row is None:
        raise Unauthorized(INVALID_KEY, code="invalid_worker_key", field="worker_key")
    if row.was == "offline":
        seen = events.Seen(row.id, row.org_id, row.name, row.pool_name, now)
        await events.emit(
            relay, session, seen, EventType.WORKER_ONLINE, now, seq=row.presence_seq, status="online"
        )
    return HeartbeatReply(drain=row.drain_requested_at is not None)


async def _come_online(session: AsyncSession, relay: OutboxRelay, worker: Worker, now: datetime) -> None:
    if worker.presence == "offline":
        worker.presence, worker.presence_seq = "online", worker.presence_seq + 1
        await events.emit(
            relay, session, worker, EventType.WORKER_ONLINE, now, seq=worker.presence_seq, status="online"
        )


async def start_draining(
    session: AsyncSession, relay: OutboxRelay, worker: Worker, now: datetime, reason: str
) -> None:
    """worker.draining once per drain, whoever started it (an admin, or the worker on SIGUSR1)."""
    if not is_draining(worker):
        worker.presence_seq += 1
        await events.emit(
            relay,
            session,
            worker,
            EventType.WORKER_DRAINING,
            now,
            seq=worker.presence_seq,
            status="draining",
            reason=reason,
        )


async def report_status(
    session: AsyncSession,
    relay: OutboxRelay,
    req: WorkerStatusRequest,
    *,
    offline_after_seconds: float,
    now: datetime | None = None,
) -> WorkerPublic:
    """The worker's own word. `offline` is a clean stop (worker.offline at once, not after the silence);
    `online` clears an earlier `error`; `draining` announces a drain the worker started itself."""
    now = now or utcnow()
    worker = await own_worker(session, req.worker_key, req.worker_id)
    if req.status == "offline":
        await events.go_offline(session, relay, worker, now, req.detail or "stopped")
        worker.running_tasks, worker.busy = 0, False
    else:
        worker.last_seen = now
        await _come_online(session, relay, worker, now)
        if req.status == "draining":
            await start_draining(session, relay, worker, now, req.detail or "the worker is draining")
        if req.running_tasks is not None:
            worker.running_tasks = req.running_tasks
            worker.busy = req.running_tasks >= worker.slots
    worker.reported_status = None if req.status == "offline" else req.status
    worker.status_detail = req.detail
    await repository.add(session, worker)
    return to_public(worker, now, offline_after_seconds)


async def sweep_offline(
    session: AsyncSession,
    relay: OutboxRelay,
    *,
    offline_after_seconds: float,
    limit: int = 500,
    now: datetime | None = None,
) -> int:
    """Workers silent for `offline_after_seconds` become offline, each with its worker.offline (the seed's
    payload: worker_id, worker_name, last_seen). Returns how many."""
    now = now or utcnow()
    gone = await repository.sweep_offline(session, now - timedelta(seconds=offline_after_seconds), limit)
    for worker in gone:
        await events.emit(
            relay,
            session,
            worker,
            EventType.WORKER_OFFLINE,
            now,
            seq=worker.presence_seq,
            reason="heartbeats stopped",
        )
        log.warning("worker %s (%s) went offline: last seen %s", worker.id, worker.name, worker.last_seen)
    return len(gone)


async def list_workers(
    session: AsyncSession, actor: Actor, *, offline_after_seconds: float
) -> list[WorkerPublic]:
    now = utcnow()
    return [
        to_public(w, now, offline_after_seconds)
        for w in await repository.visible_workers(session, actor.org_id)
    ]


async def refresh_online(
    session: AsyncSession, *, offline_after_seconds: float, now: datetime | None = None
) -> int:
    """`browserfleet_workers_online` set to the live workers (those `worker_status` does not call offline,
    busy and draining ones included); returns the count."""
    now = now or utcnow()
    online = await repository.count_online(session, now - timedelta(seconds=offline_after_seconds))
    WORKERS_ONLINE.set(online)
    return online
