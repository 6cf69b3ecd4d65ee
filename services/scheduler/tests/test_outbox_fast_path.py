"""The outbox's fast path (`OutboxRelay.committed`, and a transaction's rows after its commit): every message is
on the connection when the call returns, without a turn of the event loop (a busy service's turn is where a
created task's 201 and a claim's reply waited); JetStream's ack, when it comes, marks the row; a message
refused, or not acked in time, is published by the relay instead, once."""

from __future__ import annotations

import asyncio

import pytest
from browserfleet_core import outbox as outbox_module
from browserfleet_core.db import Database, utcnow
from browserfleet_core.outbox import OutboxRelay
from browserfleet_devkit.testing import unique_name
from browserfleet_scheduler.models import outbox
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import delete, insert, select

from .conftest import eventually


async def _rows(db: Database, subjects: list[str]) -> list[tuple[int, str, bytes, str]]:
    """Committed, unpublished outbox rows (id, subject, payload, msg id), one per subject."""
    made = [(s, unique_name("fast"), f'{{"n":{i}}}'.encode()) for i, s in enumerate(subjects)]
    values = [{"subject": s, "msg_id": m, "payload": p, "created_at": utcnow()} for s, m, p in made]
    async with db.transaction() as session:
        found = await session.execute(insert(outbox).returning(outbox.c.id, outbox.c.msg_id), values)
        ids = {str(m): int(i) for i, m in found.all()}
    return [(ids[m], s, p, m) for s, m, p in made]


async def _published_at(db: Database, row_id: int) -> object:
    async with db.transaction() as session:
        return (
            await session.execute(select(outbox.c.published_at).where(outbox.c.id == row_id))
        ).scalar_one()


async def _drop(db: Database, rows: list[tuple[int, str, bytes, str]]) -> None:
    async with db.transaction() as session:  # what is left is not for other tests' relays to publish
        await session.execute(delete(outbox).where(outbox.c.id.in_([r[0] for r in rows])))


async def test_committed_rows_are_on_the_connection_without_a_loop_turn(
    service_db: Database, nc: NatsClient, js: JetStreamContext
) -> None:
    prefix = unique_name("turn")
    stream = prefix.upper()
    await js.add_stream(name=stream, subjects=[f"{prefix}.>"])
    rows = await _rows(service_db, [f"{prefix}.created", f"{prefix}.dispatch"])
    relay = OutboxRelay(service_db, outbox, poll_seconds=3600, publish_on_commit=True)
    relay.start(js)
    try:
        await relay.committed(rows[:1])  # the ack inbox is subscribed on first use
        turned: list[bool] = []
        asyncio.get_running_loop().call_soon(turned.append, True)
        await relay.committed(rows[1:])
        assert turned == []  # nothing else ran in between: the caller's answer follows at once

        async def acked() -> bool:
            return all(r[0] in relay._published for r in rows)

        await eventually(acked, "JetStream's acks marking both rows for the next pass")
    finally:
        await relay.stop()  # marks them
    try:
        assert all([await _published_at(service_db, r[0]) is not None for r in rows])
        info = await js.stream_info(stream)
        assert info.state.messages == 2
        first = await js.get_msg(stream, seq=1)
        assert first.subject == f"{prefix}.created"  # in the order given
    finally:
        await js.delete_stream(stream)
        await _drop(service_db, rows)


async def test_a_refused_publish_is_the_relays_once_it_can_be_stored(
    service_db: Database, js: JetStreamContext
) -> None:
    prefix = unique_name("refused")
    rows = await _rows(service_db, [f"{prefix}.event"])
    relay = OutboxRelay(service_db, outbox, poll_seconds=0.05, publish_on_commit=True)
    relay.start(js)
    stream = prefix.upper()
    try:
        await relay.committed(rows)  # no stream takes the subject: JetStream answers "no responders"

        async def refused() -> bool:
            return rows[0][0] not in relay._inflight

        await eventually(refused, "the refusal reaching the relay")
        assert rows[0][0] not in relay._published
        await js.add_stream(name=stream, subjects=[f"{prefix}.>"])

        async def stored() -> bool:
            return await _published_at(service_db, rows[0][0]) is not None

        await eventually(stored, "the relay publishing the refused row once a stream takes it")
        assert (await js.stream_info(stream)).state.messages == 1
    finally:
        await relay.stop()
        await _drop(service_db, rows)
        if stream in {s.config.name for s in await js.streams_info()}:
            await js.delete_stream(stream)


async def test_a_publish_never_acked_goes_back_to_the_relay(
    service_db: Database, nc: NatsClient, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "ACK_TIMEOUT_SECONDS", 0.2)
    prefix = unique_name("unacked")
    rows = await _rows(service_db, [f"{prefix}.event"])
    heard = await nc.subscribe(f"{prefix}.>")  # a listener answers nothing: no ack, no "no responders"
    await nc.flush()
    relay = OutboxRelay(service_db, outbox, poll_seconds=0.05, publish_on_commit=True)
    relay.start(js)
    stream = prefix.upper()
    try:
        await relay.committed(rows)
        await heard.next_msg(timeout=30)  # it was published, and nothing stored it
        await js.add_stream(name=stream, subjects=[f"{prefix}.>"])

        async def stored() -> bool:
            return await _published_at(service_db, rows[0][0]) is not None

        await eventually(stored, "the relay publishing the row whose ack never came")
        assert (await js.stream_info(stream)).state.messages == 1

        async def given_up() -> bool:
            return not relay._acks

        # nothing is awaited for ever. Awaited, not asserted at once: another relay over the same table (a
        # scheduler other tests of the session started) may publish the row before this one gives up on its ack
        await eventually(given_up, "the relay giving up on the ack that never came")
    finally:
        await relay.stop()
        await heard.unsubscribe()
        await _drop(service_db, rows)
        await js.delete_stream(stream)
