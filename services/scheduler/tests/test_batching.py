"""TransactionBatcher (browserfleet_core.db) on real PostgreSQL: concurrent units share one transaction,
a failing unit fails alone and leaves nothing half-written, and results arrive only after the commit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from browserfleet_core.db import Database, TransactionBatcher, after_commit
from browserfleet_core.errors import Conflict
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, "public", pool_size=4)
    async with database.transaction() as s:
        await s.execute(text("CREATE TABLE IF NOT EXISTS batch_probe (k text PRIMARY KEY, v int NOT NULL)"))
    yield database
    await database.dispose()


async def _count(db: Database, prefix: str) -> int:
    async with db.transaction() as s:
        return int(
            (
                await s.execute(text("SELECT count(*) FROM batch_probe WHERE k LIKE :p"), {"p": prefix + "%"})
            ).scalar_one()
        )


def _insert(key: str, committed: list[str]) -> object:
    async def work(session: AsyncSession) -> str:
        await session.execute(text("INSERT INTO batch_probe (k, v) VALUES (:k, 1)"), {"k": key})

        async def done() -> None:
            committed.append(key)

        after_commit(session, done)
        return key

    return work


async def test_concurrent_units_share_a_transaction_and_answer_after_commit(db: Database) -> None:
    prefix = uuid.uuid4().hex
    batcher = TransactionBatcher(db, max_batch=50, concurrency=1)
    committed: list[str] = []
    keys = [f"{prefix}-{i}" for i in range(40)]
    results = await asyncio.gather(*(batcher.run(_insert(k, committed)) for k in keys))  # type: ignore[arg-type]
    assert results == keys
    assert sorted(committed) == sorted(keys)  # every unit's after-commit callback ran
    assert await _count(db, prefix) == 40
    # the first call ran alone (nothing queued with it), the rest shared fewer transactions than units
    assert 1 <= batcher.batches < 39


async def test_a_failing_unit_fails_alone_and_writes_nothing(db: Database) -> None:
    prefix = uuid.uuid4().hex
    batcher = TransactionBatcher(db, max_batch=50, concurrency=1)
    committed: list[str] = []

    async def half_then_fail(session: AsyncSession) -> None:
        await session.execute(text("INSERT INTO batch_probe (k, v) VALUES (:k, 1)"), {"k": f"{prefix}-bad"})
        raise Conflict("refused after writing", code="test")

    units = [_insert(f"{prefix}-{i}", committed) for i in range(10)]
    units.insert(5, half_then_fail)
    outcomes = await asyncio.gather(*(batcher.run(u) for u in units), return_exceptions=True)  # type: ignore[arg-type]
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], Conflict)
    assert await _count(db, prefix) == 10  # the ten good ones, and not the failing unit's half
    assert len(committed) == 10
