"""`Database.own_connection()` on real PostgreSQL: one connection outside the pool, in autocommit, replaced
when it dies or a failure leaves it in no known state, kept after a refused statement, closed by
`Database.dispose()`."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from browserfleet_core.db import Database, OwnConnection


async def _run(own: OwnConnection, pg: psycopg.AsyncConnection[object], sql: str) -> None:
    """A statement as the connection's users run it: a failure reported to `failed()`."""
    try:
        await pg.execute(sql)
    except BaseException:
        await own.failed(pg)
        raise


async def test_kept_after_a_refused_statement_replaced_when_killed_closed_by_dispose(
    database_url: str,
) -> None:
    db = Database(database_url, "public", pool_size=1)
    own = db.own_connection()
    pg = await own.get()
    assert pg.autocommit and await own.get() is pg

    with pytest.raises(psycopg.errors.DivisionByZero):
        await _run(own, pg, "SELECT 1 / 0")
    assert await own.get() is pg  # refused: still idle and usable

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pg.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        await _run(own, pg, "SELECT 1")
    fresh = await own.get()
    assert fresh is not pg and (await (await fresh.execute("SELECT 1")).fetchone()) == (1,)

    await db.dispose()
    assert fresh.closed


async def test_a_statement_cancelled_in_flight_leaves_no_connection_in_an_unknown_state(
    database_url: str,
) -> None:
    db = Database(database_url, "public", pool_size=1)
    own = db.own_connection()
    pg = await own.get()

    running = asyncio.create_task(_run(own, pg, "SELECT pg_sleep(30)"))
    await asyncio.sleep(0.3)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    again = await own.get()
    assert (await (await again.execute("SELECT 2")).fetchone()) == (2,)
    await db.dispose()


def test_attached_is_one_per_database_and_kind(database_url: str) -> None:
    class Writer:
        def __init__(self, db: Database) -> None:
            self.db = db

    first, second = Database(database_url, "public"), Database(database_url, "public")
    assert first.attached(Writer) is first.attached(Writer)
    assert first.attached(Writer).db is first and second.attached(Writer) is not first.attached(Writer)
