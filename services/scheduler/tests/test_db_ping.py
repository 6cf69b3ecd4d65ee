"""Database(ping_after_idle=...) on real PostgreSQL: a pooled connection whose server side died while it sat
idle is pinged, dropped and replaced on checkout, so the next transaction runs; a connection in steady
use is not pinged (the idle threshold is not reached)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from browserfleet_core.db import Database
from sqlalchemy import event, text


async def _backend_pid(db: Database) -> int:
    async with db.transaction() as s:
        return int((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@pytest.fixture
async def killer(database_url: str) -> AsyncIterator[Database]:
    other = Database(database_url, "public", pool_size=1)
    yield other
    await other.dispose()


async def test_a_dead_idle_connection_is_replaced_before_use(database_url: str, killer: Database) -> None:
    db = Database(database_url, "public", pool_size=1, ping_after_idle=0.0)  # any idle time counts
    try:
        first = await _backend_pid(db)
        async with killer.transaction() as s:
            await s.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first})
        second = await _backend_pid(db)  # would raise OperationalError without the ping
        assert second != first
    finally:
        await db.dispose()


async def test_a_connection_in_steady_use_is_not_pinged(database_url: str) -> None:
    db = Database(database_url, "public", pool_size=1, ping_after_idle=3600.0)
    statements: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        for _ in range(3):
            await _backend_pid(db)
        assert statements == ["SELECT pg_backend_pid()"] * 3
    finally:
        await db.dispose()
