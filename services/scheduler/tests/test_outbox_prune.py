"""The outbox relay deletes rows published long ago (`OutboxRelay.prune`): the table no longer grows by every
event the scheduler ever wrote. Unpublished rows and rows published within the keep period stay, whatever
their age; a backlog larger than one statement's batch goes in several."""

from __future__ import annotations

from datetime import timedelta

import pytest
from browserfleet_core import outbox as outbox_module
from browserfleet_core.db import Database, utcnow
from browserfleet_core.outbox import OutboxRelay
from browserfleet_devkit.testing import unique_name
from browserfleet_scheduler.models import outbox
from nats.js import JetStreamContext
from sqlalchemy import delete, func, insert, select

from .conftest import eventually


async def test_rows_published_long_ago_go_and_the_rest_stay(
    service_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "PRUNE_BATCH", 3)  # 7 old rows: three statements
    prefix = unique_name("prune")
    now = utcnow()
    long_ago = now - timedelta(days=2)
    rows = (
        [(f"{prefix}-old-{i}", long_ago, long_ago) for i in range(7)]  # published long ago: deleted
        + [(f"{prefix}-recent", long_ago, now - timedelta(seconds=30))]  # old, published just now: kept
        + [(f"{prefix}-pending", long_ago, None)]  # never published (the relay's to send): kept
    )
    async with service_db.transaction() as session:
        await session.execute(
            insert(outbox),
            [
                {"subject": "x", "msg_id": m, "payload": b"{}", "created_at": c, "published_at": p}
                for m, c, p in rows
            ],
        )

    relay = OutboxRelay(service_db, outbox)
    try:
        deleted = await relay.prune(keep_seconds=3600)
    finally:  # what is left is not for other tests' relays to publish
        async with service_db.transaction() as session:
            left_rows = await session.execute(
                delete(outbox).where(outbox.c.msg_id.like(f"{prefix}-%")).returning(outbox.c.msg_id)
            )
            left = set(left_rows.scalars())

    async with service_db.transaction() as session:
        older_left = (
            await session.execute(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.published_at < now - timedelta(hours=1))
            )
        ).scalar_one()
    assert left == {f"{prefix}-recent", f"{prefix}-pending"}
    assert older_left == 0  # other tests' rows published that long ago went too
    assert deleted >= 7


async def test_the_running_relay_prunes(
    service_db: Database, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "PRUNE_EVERY_SECONDS", 0.0)
    msg_id = unique_name("prune-run")
    long_ago = utcnow() - timedelta(days=2)
    async with service_db.transaction() as session:
        await session.execute(
            insert(outbox),
            [
                {
                    "subject": "x",
                    "msg_id": msg_id,
                    "payload": b"{}",
                    "created_at": long_ago,
                    "published_at": long_ago,
                }
            ],
        )
    relay = OutboxRelay(service_db, outbox, poll_seconds=0.05)
    relay.start(js)
    try:

        async def gone() -> bool:
            async with service_db.transaction() as session:
                found = await session.execute(select(outbox.c.id).where(outbox.c.msg_id == msg_id))
                return found.first() is None

        await eventually(gone, "the relay deleting a row published two days ago")
    finally:
        await relay.stop()
