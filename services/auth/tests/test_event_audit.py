"""`webhook.endpoint.disabled` on EVENTS becomes one audit entry of its organization (no email), however often
the event is delivered; a malformed event is dropped and the consumer moves on. The auth service runs on real
NATS (its whole start: streams, relay, the audited-events consumer) and a real PostgreSQL database of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from browserfleet_auth import audit
from browserfleet_auth.app import AuthApp, build
from browserfleet_auth.event_audit import DURABLE
from browserfleet_auth.settings import AuthSettings
from browserfleet_contracts import subjects
from browserfleet_contracts.auth import ListAuditRequest
from browserfleet_contracts.common import Actor
from browserfleet_contracts.events import EventEnvelope, EventType
from browserfleet_devkit.testing import wait_consumed


@pytest.fixture(scope="module")
async def started(nats_url: str, fresh_database: Callable[[], str]) -> AsyncIterator[AuthApp]:
    app = build(AuthSettings(nats_url=nats_url, database_url=fresh_database()))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def test_a_disabled_endpoint_is_audited_once(started: AuthApp) -> None:
    org = str(uuid.uuid4())
    endpoint = str(uuid.uuid4())
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = EventEnvelope(
        id=f"{endpoint}:webhook.endpoint.disabled:{at.isoformat()}",
        type=EventType.WEBHOOK_ENDPOINT_DISABLED,
        org_id=org,
        occurred_at=at,
        data={
            "endpoint_id": endpoint,
            "url": "https://customer.example/hook",
            "kind": "endpoint",
            "reason": "gone",
            "detail": "the receiver answered 410 Gone",
            "failing_since": at.isoformat(),
            "disabled_at": at.isoformat(),
        },
    )
    js = started.broker.connection.jetstream()
    subject = subjects.event(org, EventType.WEBHOOK_ENDPOINT_DISABLED)
    await js.publish(subject, b"{not json", headers={"Nats-Msg-Id": f"{endpoint}:bad"})
    for copy in ("a", "b"):  # two msg ids: JetStream keeps both, the consumer sees the event twice
        ack = await js.publish(
            subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": f"{event.id}#{copy}"}
        )
    await wait_consumed(js, subjects.EVENTS_STREAM, DURABLE, ack.seq)

    assert started.db is not None
    async with started.db.transaction() as session:
        page = await audit.list_audit(session, ListAuditRequest(actor=Actor(org_id=org, role="admin")))
    [entry] = page.items
    assert (entry.action, entry.outcome, entry.target) == (
        "webhook.endpoint_disabled",
        "success",
        "https://customer.example/hook",
    )
    assert (entry.actor_user_id, entry.actor_api_key_id) == (None, None)  # the platform did it
    assert entry.at == at
    assert (entry.detail["event_id"], entry.detail["reason"]) == (event.id, "gone")
