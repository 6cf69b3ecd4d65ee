"""Recording what an attempt got: the delivery's next state, the attempt log, the endpoint's health and
circuit, and disabling an endpoint (410, or failing for the whole window) with its `webhook.endpoint.disabled`
event, all in one transaction (the event through the outbox)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from browserfleet_contracts import subjects
from browserfleet_contracts.catalog import WebhookEndpointDisabledData
from browserfleet_contracts.events import EventEnvelope, EventType
from browserfleet_contracts.webhooks import endpoint_event_id
from browserfleet_core.db import AsyncSession
from browserfleet_core.outbox import OutboxRelay

from . import repository, schedule
from .settings import WebhooksSettings

MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Answer:
    """What one HTTP attempt got: a status (None when no answer came), or an error, and what it took."""

    status_code: int | None
    latency_ms: float | None
    error: str | None
    response: str | None = None
    retry_after: float | None = None


def clip(text: str | None, limit: int = MAX_ERROR_CHARS) -> str | None:
    return None if text is None else text[:limit]


async def record(
    session: AsyncSession,
    relay: OutboxRelay,
    settings: WebhooksSettings,
    claimed: repository.Claimed,
    answer: Answer,
    now: datetime,
) -> str | None:
    """Store one attempt's outcome; returns the delivery's new status, or None when the claim was lost
    (another replica took a later attempt, or the endpoint is gone) and nothing was written."""
    out = schedule.outcome(
        cycle_attempt=claimed.cycle_attempt,
        status_code=answer.status_code,
        retry_after=answer.retry_after,
        schedule=settings.webhook_retry_schedule,
        retry_after_max=settings.webhook_retry_after_max_seconds,
        now=now,
    )
    recorded = await repository.record_attempt(
        session,
        delivery_id=claimed.id,
        attempt=claimed.attempt,
        status=out.status,
        status_code=answer.status_code,
        latency_ms=answer.latency_ms,
        error=clip(answer.error),
        response=answer.response,
        next_attempt_at=out.next_attempt_at,
        now=now,
    )
    if not recorded:
        return None
    succeeded = schedule.is_success(answer.status_code)
    health = await repository.record_health(
        session,
        claimed.endpoint_id,
        succeeded=succeeded,
        now=now,
        circuit_failures=settings.webhook_circuit_failures,
        cooldown_seconds=settings.webhook_circuit_cooldown_seconds,
    )
    if health is not None and health.enabled and not succeeded:
        reason = schedule.disable_reason(
            status_code=answer.status_code,
            failing_since=health.failing_since,
            now=now,
            window_seconds=settings.webhook_disable_after_seconds,
        )
        if reason is not None:
            detail = (
                "the receiver answered 410 Gone"
                if reason == "gone"
                else f"every attempt failed for {settings.webhook_disable_after_seconds:g} s "
                f"({health.consecutive_failures} in a row)"
            )
            await disable(session, relay, health, reason=reason, detail=detail, now=now)
    return out.status


async def disable(
    session: AsyncSession,
    relay: OutboxRelay,
    health: repository.Health,
    *,
    reason: str,
    detail: str,
    now: datetime,
) -> bool:
    """Disable an endpoint and announce it on EVENTS (auth records it in the organization's audit log; other
    endpoints subscribed to `webhook.*` hear of it). Its deliveries wait until it is enabled again."""
    if not await repository.disable_endpoint(session, health.id, reason=reason, now=now):
        return False
    event = EventType.WEBHOOK_ENDPOINT_DISABLED
    data = WebhookEndpointDisabledData(
        endpoint_id=health.id,
        url=health.url,
        kind="task_url" if health.kind == "task_url" else "endpoint",
        reason="gone" if reason == "gone" else "failing",
        detail=detail,
        failing_since=health.failing_since,
        disabled_at=now,
    )
    event_id = endpoint_event_id(health.id, event, now)
    envelope = EventEnvelope(
        id=event_id, type=event, org_id=health.org_id, occurred_at=now, data=data.model_dump(mode="json")
    )
    await relay.enqueue(session, subjects.event(health.org_id, event), envelope, event_id)
    return True
