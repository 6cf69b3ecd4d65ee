"""Batch intake of EVENTS: `handlers.on_events` records a whole batch in one transaction (real PostgreSQL),
with real JetStream messages so that acks, naks and terms reach the server.

The batches come from a stream of the test's own (same messages, same subjects as EVENTS) so each test
chooses exactly what one batch holds; the running service's own EVENTS consumer never sees them.
The webhook receiver is a local HTTP server on 127.0.0.1 standing in for a customer's system.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import yaml
from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.events import EventEnvelope
from browserfleet_core.db import utcnow
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.testing import rolled_back_session
from browserfleet_webhooks import handlers
from browserfleet_webhooks.app import WebhooksService, create_broker
from browserfleet_webhooks.intake import record_events
from browserfleet_webhooks.models import WebhookDelivery, WebhookEndpoint
from browserfleet_webhooks.repository.takers import TakerCheck
from faststream.specification import AsyncAPI
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from sqlalchemy import text
from sqlmodel import col, select

from .conftest import TEST_SCHEDULE, Receiver
from .helpers import endpoint as _endpoint

WAIT_CAP = 30.0


def _org() -> Actor:
    return Actor(org_id=f"org-{uuid.uuid4().hex[:8]}", user_id="admin-1", role="admin")


def _event(actor: Actor, event_type: str = "task.completed", event_id: str | None = None) -> EventEnvelope:
    task_id = str(uuid.uuid4())
    return EventEnvelope(
        id=event_id or f"{task_id}:1:{event_type.split('.')[1]}",
        type=event_type,
        org_id=actor.org_id,
        occurred_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        data={"task_id": task_id, "status": event_type.split(".")[1]},
    )


@dataclass
class Batches:
    """A stream of this test's own with subjects like EVENTS', and a pull consumer to take batches from."""

    js: JetStreamContext
    stream: str
    prefix: str

    async def take(self, *payloads: EventEnvelope | bytes) -> list[Msg]:
        """Publish `payloads` and fetch them back as one batch of real JetStream messages."""
        for p in payloads:
            data = p if isinstance(p, bytes) else p.model_dump_json().encode()
            await self.js.publish(f"{self.prefix}.events.x", data)
        sub = await self.js.pull_subscribe_bind("intake", stream=self.stream)
        try:
            msgs = await sub.fetch(len(payloads), timeout=WAIT_CAP)
        finally:
            await sub.unsubscribe()
        assert len(msgs) == len(payloads)
        return msgs

    async def ack_pending(self) -> int:
        return (await self.js.consumer_info(self.stream, "intake")).num_ack_pending


@pytest.fixture
async def batches(js: JetStreamContext) -> AsyncIterator[Batches]:
    token = secrets.token_hex(4)
    b = Batches(js, f"INTAKE_{token}", f"intake{token}")
    await js.add_stream(StreamConfig(name=b.stream, subjects=[f"{b.prefix}.>"]))
    await js.add_consumer(
        b.stream,
        ConsumerConfig(
            durable_name="intake", name="intake", ack_policy=AckPolicy.EXPLICIT, ack_wait=WAIT_CAP
        ),
    )
    try:
        yield b
    finally:
        await js.delete_stream(b.stream)


async def _settle_as_batch_consumer(msgs: list[Msg]) -> None:
    """What BatchConsumer does after the handler returns: ack every message the handler left unsettled."""
    for m in msgs:
        if not m.is_acked:
            await m.ack()


async def _ack_pending_becomes(batches: Batches, expected: int) -> None:
    """Acks are processed by the server asynchronously: wait (WAIT_CAP only stops a hang)."""

    async def poll() -> None:
        while True:
            if await batches.ack_pending() == expected:
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), WAIT_CAP)


async def _deliveries(svc: WebhooksService, event_ids: list[str]) -> set[tuple[str, str]]:
    async with svc.db.transaction() as session:
        rows = (
            await session.exec(
                select(WebhookDelivery.endpoint_id, WebhookDelivery.event_id).where(
                    col(WebhookDelivery.event_id).in_(event_ids)
                )
            )
        ).all()
    return {(r[0], r[1]) for r in rows}


async def test_a_batch_of_two_orgs_creates_exactly_the_matching_deliveries(
    rpc: RpcClient, batches: Batches, receiver: Receiver, service: WebhooksService
) -> None:
    a, b = _org(), _org()
    completed = await _endpoint(rpc, a, receiver.url(f"/hook/{uuid.uuid4().hex}"), ["task.completed"])
    any_task = await _endpoint(rpc, a, receiver.url(f"/hook/{uuid.uuid4().hex}"), ["task.*"])
    failed = await _endpoint(rpc, a, receiver.url(f"/hook/{uuid.uuid4().hex}"), ["task.failed"])
    # b's only endpoint wants something none of b's events is
    await _endpoint(rpc, b, receiver.url(f"/hook/{uuid.uuid4().hex}"), ["task.failed"])
    a_completed, a_started = _event(a, "task.completed"), _event(a, "task.started")
    b_completed, b_started = _event(b, "task.completed"), _event(b, "task.started")
    events = [a_completed, b_completed, a_started, b_started]

    msgs = await batches.take(*events)
    await handlers.on_events(service.runtime, msgs)
    assert not any(m.is_acked for m in msgs)  # nothing settled by the handler: BatchConsumer acks them
    await _settle_as_batch_consumer(msgs)
    await _ack_pending_becomes(batches, 0)

    assert await _deliveries(service, [e.id for e in events]) == {
        (completed.id, a_completed.id),
        (any_task.id, a_completed.id),
        (any_task.id, a_started.id),
    }
    assert failed.id not in {endpoint for endpoint, _ in await _deliveries(service, [e.id for e in events])}


async def test_a_redelivered_batch_creates_nothing_new(
    rpc: RpcClient, batches: Batches, receiver: Receiver, service: WebhooksService
) -> None:
    a = _org()
    endpoint = await _endpoint(rpc, a, receiver.url(f"/hook/{uuid.uuid4().hex}"), ["*"])
    events = [_event(a, "task.completed") for _ in range(3)]
    await handlers.on_events(service.runtime, await batches.take(*events))
    ids = [e.id for e in events]
    first = await _deliveries(service, ids)
    assert first == {(endpoint.id, e.id) for e in events}
    async with service.db.transaction() as session:
        before = {
            d.id
            for d in (
                await session.exec(select(WebhookDelivery).where(col(WebhookDelivery.event_id).in_(ids)))
            )
        }

    # the same events again (a redelivery, or a re-publication after the duplicate window), one twice
    again = await batches.take(*events, events[0])
    await handlers.on_events(service.runtime, again)
    assert not any(m.is_acked for m in again)
    async with service.db.transaction() as session:
        after = {
            d.id
            for d in (
                await session.exec(select(WebhookDelivery).where(col(WebhookDelivery.event_id).in_(ids)))
            )
        }
    assert after == before


async def test_a_malformed_message_is_terminated_alone(
    rpc: RpcClient, batches: Batches, receiver: Receiver, service: WebhooksService
) -> None:
    a = _org()
    endpoint = await _endpoint(rpc, a, receiver.url(f"/hook/{uuid.uuid4().hex}"), ["task.*"])
    good = [_event(a), _event(a, "task.failed")]
    msgs = await batches.take(good[0], b"{not json", b'{"id": "x"}', good[1])

    await handlers.on_events(service.runtime, msgs)
    assert [m.is_acked for m in msgs] == [False, True, True, False]  # the two bad ones were settled here
    await _settle_as_batch_consumer(msgs)
    # nothing waits for redelivery: a nak'ed message would stay ack-pending, a terminated one does not
    await _ack_pending_becomes(batches, 0)
    assert await _deliveries(service, [e.id for e in good]) == {(endpoint.id, e.id) for e in good}


async def test_a_failing_batch_falls_back_to_one_transaction_per_event(
    rpc: RpcClient, batches: Batches, receiver: Receiver, service: WebhooksService
) -> None:
    """An event id longer than the column makes the batch's INSERT fail in PostgreSQL; the other events are
    recorded one by one and acked, the poisoned one alone is nak'ed (offered again later)."""
    a, b = _org(), _org()
    endpoint_a = await _endpoint(rpc, a, receiver.url(f"/hook/{uuid.uuid4().hex}"), ["*"])
    endpoint_b = await _endpoint(rpc, b, receiver.url(f"/hook/{uuid.uuid4().hex}"), ["task.completed"])
    before, after = _event(a), _event(b)
    poisoned = _event(a, event_id="p" * 300)
    msgs = await batches.take(before, poisoned, after)

    await handlers.on_events(service.runtime, msgs)
    assert [m.is_acked for m in msgs] == [False, True, False]  # only the poisoned one was nak'ed here
    await _settle_as_batch_consumer(msgs)
    await _ack_pending_becomes(batches, 1)  # the nak'ed one waits for its redelivery
    assert await _deliveries(service, [before.id, poisoned.id, after.id]) == {
        (endpoint_a.id, before.id),
        (endpoint_b.id, after.id),
    }


async def test_a_batch_outlives_the_taker_questions_connection(
    rpc: RpcClient, batches: Batches, receiver: Receiver, service: WebhooksService
) -> None:
    """Whether a batch has a taker is asked on a connection of the consumer's own: killed between two
    batches (a PostgreSQL restart, a proxy's idle timeout), the next batch is still recorded at once, not
    nak'ed to wait for its redelivery."""
    a = _org()
    endpoint = await _endpoint(rpc, a, receiver.url(f"/hook/{uuid.uuid4().hex}"), ["task.completed"])
    check = TakerCheck.of(service.db)
    assert await check.any_endpoint({a.org_id}, ["task.completed"])
    assert check._own._pg is not None
    pid = check._own._pg.info.backend_pid
    async with service.db.statement() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})

    event = _event(a)
    msgs = await batches.take(event)
    await handlers.on_events(service.runtime, msgs)
    assert not msgs[0].is_acked  # not nak'ed: BatchConsumer acks it
    assert await _deliveries(service, [event.id]) == {(endpoint.id, event.id)}
    assert check._own._pg is not None and check._own._pg.info.backend_pid != pid


async def test_record_events_matches_per_event_org_and_type(service: WebhooksService) -> None:
    """The service function alone, rolled back: an endpoint gets an event only when it is of its org and
    one of its filters (the type, `<entity>.*` or `*`) selects it; a disabled endpoint gets nothing."""
    a, b = _org(), _org()
    async with rolled_back_session(service.db.engine) as session:
        endpoints = {
            "a_star": WebhookEndpoint(
                org_id=a.org_id, url="https://a.example/1", events=["*"], kind="endpoint"
            ),
            "a_run": WebhookEndpoint(
                org_id=a.org_id, url="https://a.example/2", events=["security.*"], kind="endpoint"
            ),
            "a_off": WebhookEndpoint(
                org_id=a.org_id, url="https://a.example/3", events=["*"], kind="endpoint", enabled=False
            ),
            "b_done": WebhookEndpoint(
                org_id=b.org_id, url="https://b.example/1", events=["task.completed"], kind="endpoint"
            ),
        }
        session.add_all(endpoints.values())
        await session.flush()
        ev = {
            "a_done": _event(a, "task.completed"),
            "a_run": _event(a, "security.request_blocked"),
            "b_done": _event(b, "task.completed"),
            "b_fail": _event(b, "task.failed"),
        }
        created = await record_events(
            session,
            [*ev.values(), ev["a_done"]],
            box=service.runtime.box,
            schedule_delays=TEST_SCHEDULE,
            now=utcnow(),
        )
        rows = (await session.exec(select(WebhookDelivery.endpoint_id, WebhookDelivery.event_id))).all()
        got = {(r[0], r[1]) for r in rows}
        expected = {
            (endpoints["a_star"].id, ev["a_done"].id),
            (endpoints["a_star"].id, ev["a_run"].id),
            (endpoints["a_run"].id, ev["a_run"].id),
            (endpoints["b_done"].id, ev["b_done"].id),
        }
        assert got >= expected
        assert {(e, i) for e, i in got if i in {x.id for x in ev.values()}} == expected
        assert created == len(expected)
        again = await record_events(
            session, list(ev.values()), box=service.runtime.box, schedule_delays=TEST_SCHEDULE, now=utcnow()
        )
        assert again == 0


def _channels(document: dict[str, object]) -> dict[str, dict[str, object]]:
    channels = document["channels"]
    assert isinstance(channels, dict)
    return channels


def test_the_events_consumer_is_documented_but_not_a_faststream_subscriber(service: WebhooksService) -> None:
    """proto/asyncapi.yaml is generated from `create_broker(settings)`: it still describes the EVENTS
    subscription; the running service's broker has no subscriber on it (BatchConsumer consumes it)."""
    described = yaml.safe_load(
        AsyncAPI(create_broker(service.settings), title="t", version="1").to_specification().to_yaml()
    )
    channel = _channels(described)[f"{handlers.EVENTS_DURABLE}.events"]
    assert channel["address"] == subjects.EVENTS_ALL
    assert "EventEnvelope" in described["components"]["schemas"]

    running = yaml.safe_load(AsyncAPI(service.broker, title="t", version="1").to_specification().to_yaml())
    assert all(c.get("address") != subjects.EVENTS_ALL for c in _channels(running).values())
    assert service.events is not None
