"""Deliveries as the API shows them: the log (with every attempt), a replay of one, a test event, and bulk
replays as background jobs.

Takes a session and plain values; never commits (the caller's `Database.transaction()` does).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from browserfleet_contracts.catalog import WebhookTestData
from browserfleet_contracts.common import Actor
from browserfleet_contracts.events import EventType
from browserfleet_contracts.webhooks import (
    ReplayFailedCreate,
    ReplayJobPublic,
    WebhookAttemptPublic,
    WebhookDeliveryDetail,
    WebhookDeliveryPublic,
    webhook_test_event_id,
)
from browserfleet_core.db import AsyncSession, new_id, utcnow
from browserfleet_core.errors import Conflict, NotFound
from browserfleet_core.lookup import found
from browserfleet_core.projection import project

from . import intake, registry, repository
from .models import DEAD, JOB_COMPLETED, SUCCEEDED, WebhookDelivery, WebhookEndpoint, WebhookReplayJob


def delivery_public(d: WebhookDelivery) -> WebhookDeliveryPublic:
    return project(
        WebhookDeliveryPublic,
        d,
        next_attempt_at=d.next_attempt_at if d.status not in (SUCCEEDED, DEAD) else None,
    )


def job_public(job: WebhookReplayJob) -> ReplayJobPublic:
    return project(ReplayJobPublic, job, status="completed" if job.status == JOB_COMPLETED else "running")


def _enabled(endpoint: WebhookEndpoint, what: str) -> None:
    if not endpoint.enabled:
        raise Conflict(
            f"the endpoint is disabled ({endpoint.disabled_reason or 'admin'}): enable it before {what}",
            code="endpoint_disabled",
        )


async def list_deliveries(
    session: AsyncSession, actor: Actor, *, endpoint_id: str | None, status: str | None, limit: int
) -> list[WebhookDeliveryPublic]:
    if endpoint_id is not None and await repository.get_endpoint(session, actor.org_id, endpoint_id) is None:
        raise NotFound("webhook endpoint not found", field="endpoint_id")
    rows = await repository.list_deliveries(
        session, actor.org_id, endpoint_id=endpoint_id, status=status, limit=limit
    )
    return [delivery_public(d) for d in rows]


async def _find(
    session: AsyncSession, actor: Actor, delivery_id: str, *, lock: bool = False
) -> WebhookDelivery:
    delivery = await repository.get_delivery(session, actor.org_id, delivery_id, lock=lock)
    return found(delivery, "webhook delivery not found", field="id")


async def get_delivery(session: AsyncSession, actor: Actor, delivery_id: str) -> WebhookDeliveryDetail:
    delivery = await _find(session, actor, delivery_id)
    attempts = await repository.list_attempts(session, delivery.id)
    payload: dict[str, Any] = json.loads(delivery.payload)
    return WebhookDeliveryDetail(
        **delivery_public(delivery).model_dump(),
        payload=payload,
        attempts=[project(WebhookAttemptPublic, a) for a in attempts],
    )


async def replay_delivery(session: AsyncSession, actor: Actor, delivery_id: str) -> WebhookDeliveryPublic:
    """Send one delivery again now, whatever its status, with a fresh retry schedule (same webhook-id and
    body, so a receiver that already has it recognises it)."""
    registry.require_admin(actor)
    delivery = await _find(session, actor, delivery_id, lock=True)
    endpoint = await registry.find(session, actor, delivery.endpoint_id)
    _enabled(endpoint, "replaying to it")
    await repository.requeue(session, delivery, now=utcnow())
    return delivery_public(delivery)


async def send_test(
    session: AsyncSession, actor: Actor, endpoint_id: str, *, first_attempt_at: datetime | None = None
) -> WebhookDeliveryPublic:
    """A `webhook.test` event to this endpoint only, delivered (signed, retried, logged) like any other."""
    registry.require_admin(actor)
    endpoint = await registry.find(session, actor, endpoint_id)
    _enabled(endpoint, "sending it a test event")
    now = utcnow()
    event_id = webhook_test_event_id(endpoint.id, new_id())
    data = WebhookTestData(endpoint_id=endpoint.id).model_dump(mode="json")
    body = intake.webhook_body(EventType.WEBHOOK_TEST.value, now, data)
    [created] = await repository.insert_deliveries(
        session,
        [
            repository.NewDelivery(
                endpoint_id=endpoint.id,
                org_id=actor.org_id,
                event_id=event_id,
                event_type=EventType.WEBHOOK_TEST.value,
                payload=body,
            )
        ],
        now=now,
        first_attempt_at=first_attempt_at or now,
    )
    return delivery_public(await _find(session, actor, created))


async def start_replay(
    session: AsyncSession, actor: Actor, endpoint_id: str, replay: ReplayFailedCreate
) -> ReplayJobPublic:
    """A job that replays every delivery of this endpoint in `failed` or `dead` created since `replay.since`
    (up to now: what fails later is not its business)."""
    registry.require_admin(actor)
    endpoint = await registry.find(session, actor, endpoint_id, lock=True)
    _enabled(endpoint, "replaying to it")
    now = utcnow()
    total = await repository.count_replayable(session, endpoint.id, since=replay.since, until=now)
    job = WebhookReplayJob(
        org_id=actor.org_id,
        endpoint_id=endpoint.id,
        since=replay.since,
        total=total,
        created_by=actor.user_id or actor.api_key_id,
        created_at=now,
    )
    await repository.save(session, job)
    return job_public(job)


async def get_job(session: AsyncSession, actor: Actor, job_id: str) -> ReplayJobPublic:
    job = await repository.get_job(session, actor.org_id, job_id)
    return job_public(found(job, "replay job not found", field="id"))


async def advance_job(session: AsyncSession, *, batch: int) -> bool:
    """One step of the oldest running job no other replica holds: requeue its next `batch` deliveries, or
    finish it. False when no job was waiting."""
    job = await repository.next_running_job(session)
    if job is None:
        return False
    now = utcnow()
    requeued, last_id = await repository.requeue_replayable(
        session,
        job.endpoint_id,
        since=job.since,
        until=job.created_at,
        after_id=job.cursor,
        limit=batch,
        now=now,
    )
    if last_id is None:
        job.status = JOB_COMPLETED
        job.finished_at = now
    else:
        job.cursor = last_id
        job.replayed += requeued
    await repository.save(session, job)
    return True
