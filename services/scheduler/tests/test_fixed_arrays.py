"""`repository.driver.Fixed` sends a list parameter as an array in PostgreSQL's binary format (no per-element
quoting and escaping by psycopg), and what comes back is what went in: quotes, backslashes, NULLs, an empty
array. On the real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from browserfleet_core.db import Database
from browserfleet_scheduler.repository.driver import Fixed
from sqlalchemy import text

ROUND_TRIP = Fixed(
    text(
        "SELECT CAST(:texts AS text[]) AS texts, CAST(:ints AS integer[]) AS ints, CAST(:at AS timestamptz[]) AS at, :one AS one"
    )
)


@pytest.fixture
async def db(migrated: str) -> AsyncIterator[Database]:
    database = Database(migrated, "scheduler", pool_size=2)
    yield database
    await database.dispose()


async def test_lists_go_binary_and_come_back_whole(db: Database) -> None:
    texts = ['{"a": "q\\"x", "b": "\\\\"}', None, "plain", "", "{,}"]
    now = datetime.now(UTC)
    async with db.statement() as conn:
        assert "%(texts)b" in ROUND_TRIP.sql(conn, frozenset({"texts", "ints", "at"}))
        assert "%(one)s" in ROUND_TRIP.sql(conn, frozenset({"texts", "ints", "at"}))
        row = await ROUND_TRIP.first(
            conn, {"texts": texts, "ints": [1, None, 2**31 - 1], "at": [now], "one": "x"}
        )
        assert row is not None
        assert (row.texts, row.ints, row.at, row.one) == (texts, [1, None, 2**31 - 1], [now], "x")
        empty = await ROUND_TRIP.first(conn, {"texts": [], "ints": [], "at": [], "one": None})
        assert empty is not None and (empty.texts, empty.ints, empty.at) == ([], [], [])
