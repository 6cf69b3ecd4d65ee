"""The call entries written together (`RequestAuditBatch`): records in hand at once share one statement, and
each entry is what it would be written alone; a record PostgreSQL refuses fails only its own call; the
answer to a record means its entry is committed. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from browserfleet_auth import audit
from browserfleet_auth.models import AuditLog
from browserfleet_auth.repository import audit_batch
from browserfleet_auth.repository.audit_batch import RequestAuditBatch
from browserfleet_contracts.auth import RequestAudit
from browserfleet_contracts.common import Actor
from browserfleet_core.db import Database
from sqlalchemy import text
from sqlmodel import col, select

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ROUTE = "POST /api/v1/tasks"


@pytest.fixture(scope="module")
async def db(fresh_database: Callable[[], str]) -> AsyncIterator[Database]:
    database = Database(fresh_database(), "auth", pool_size=2)
    yield database
    await RequestAuditBatch.of(database).close()
    await database.dispose()


def req(request_id: str, phase: str, *, client_ip: str = "10.0.0.9", **extra: Any) -> RequestAudit:
    actor = Actor(org_id="org-1", user_id="user-1", role="admin", client_ip=client_ip, request_id=request_id)
    return RequestAudit(actor=actor, phase=phase, action="api.create_task", route=ROUTE, **extra)


async def rows(db: Database, request_id: str) -> list[dict[str, Any]]:
    async with db.transaction() as session:
        found = (
            await session.exec(
                select(AuditLog).where(AuditLog.request_id == request_id).order_by(col(AuditLog.id))
            )
        ).all()
    return [row.model_dump(exclude={"id", "request_id"}) for row in found]


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every statement the batch runs."""
    sizes: list[int] = []
    execute = RequestAuditBatch._execute

    async def counted(self: RequestAuditBatch, batch: list[Any]) -> set[int]:
        sizes.append(len(batch))
        return await execute(self, batch)

    monkeypatch.setattr(RequestAuditBatch, "_execute", counted)
    return sizes


async def test_records_in_hand_at_once_are_one_statement(db: Database, statements: list[int]) -> None:
    ids = [uuid.uuid4().hex for _ in range(20)]
    await asyncio.gather(*(audit.record_request_at_once(db, AT, req(r, "begin", path={"n": r})) for r in ids))
    assert statements == [20]
    closes = (
        req(r, "end", status=201 if i % 2 else 409, code=None if i % 2 else "conflict")
        for i, r in enumerate(ids)
    )
    await asyncio.gather(*(audit.record_request_at_once(db, AT, c) for c in closes))
    assert statements == [20, 20]
    for i, r in enumerate(ids):
        (entry,) = await rows(db, r)
        assert entry["detail"] == ({"path": {"n": r}} if i % 2 else {"path": {"n": r}, "code": "conflict"})
        assert (entry["outcome"], entry["status"], entry["route"]) == (
            ("success", 201, ROUTE) if i % 2 else ("failed", 409, ROUTE)
        )


async def test_a_call_recorded_twice_in_one_batch_is_one_entry(db: Database, statements: list[int]) -> None:
    """The first of a call's records in a batch is written; the others fall back, where a repeated phase
    changes nothing, as it does one at a time."""
    rid = uuid.uuid4().hex
    await asyncio.gather(*(audit.record_request_at_once(db, AT, req(rid, "begin")) for _ in range(3)))
    await asyncio.gather(
        audit.record_request_at_once(db, AT, req(rid, "end", status=200)),
        audit.record_request_at_once(db, AT, req(rid, "end", status=500)),
    )
    (entry,) = await rows(db, rid)
    assert entry["status"] in (200, 500) and entry["outcome"] == audit.outcome_of(entry["status"])
    assert statements[0] == 3


async def test_a_refused_record_fails_alone(db: Database, statements: list[int]) -> None:
    """A value PostgreSQL refuses (an address longer than its column) fails its own call; the others in its
    batch are written."""
    good, bad = uuid.uuid4().hex, uuid.uuid4().hex
    results = await asyncio.gather(
        audit.record_request_at_once(db, AT, req(good, "begin")),
        audit.record_request_at_once(db, AT, req(bad, "begin", client_ip="x" * 65)),
        return_exceptions=True,
    )
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], Exception)
    assert statements == [2, 1, 1]
    assert len(await rows(db, good)) == 1
    assert await rows(db, bad) == []


async def test_an_answer_means_the_entry_is_committed(db: Database) -> None:
    """What `begin` waits for: once answered, another connection reads the entry."""
    rid = uuid.uuid4().hex
    assert await RequestAuditBatch.of(db).write(AT, req(rid, "begin"))
    (entry,) = await rows(db, rid)
    assert entry["outcome"] == "pending" and entry["status"] is None


async def test_a_record_outlives_the_writers_connection(db: Database) -> None:
    """The writer keeps a connection of its own: killed between two records (a PostgreSQL restart, a proxy's
    idle timeout), the next record is still written, on a new connection, and answered once committed."""
    batch = RequestAuditBatch.of(db)
    assert await batch.write(AT, req(uuid.uuid4().hex, "begin"))
    assert batch._own._pg is not None
    pid = batch._own._pg.info.backend_pid
    async with db.statement() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
    rid = uuid.uuid4().hex
    assert await batch.write(AT, req(rid, "begin"))
    assert len(await rows(db, rid)) == 1
    assert batch._own._pg is not None and batch._own._pg.info.backend_pid != pid


async def test_closed_the_writer_opens_again(db: Database) -> None:
    batch = RequestAuditBatch.of(db)
    await batch.close()
    assert batch._own._pg is None
    rid = uuid.uuid4().hex
    assert await batch.write(AT, req(rid, "begin"))
    assert len(await rows(db, rid)) == 1


async def test_a_database_that_cannot_write_refuses_every_record(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is answered as written unless its statement committed: the gateway then refuses the call."""

    async def down(self: RequestAuditBatch, batch: list[Any]) -> set[int]:
        raise OSError("connection refused")

    monkeypatch.setattr(RequestAuditBatch, "_execute", down)
    results = await asyncio.gather(
        *(audit.record_request_at_once(db, AT, req(uuid.uuid4().hex, "begin")) for _ in range(4)),
        return_exceptions=True,
    )
    assert all(isinstance(r, OSError) for r in results)
    assert audit_batch.RequestAuditBatch.of(db)._waiting == []


async def test_closing_a_burst_of_entries_keeps_each_on_its_page(db: Database) -> None:
    """A burst of opens fills pages; each entry's close, a few calls at a time, must still fit beside it (a HOT
    update, which writes no index entry): the log's pages keep room for it (fillfactor, migration 0007). On
    pages filled to the brim the first closes of each page moved their entries to another page."""
    ids = [uuid.uuid4().hex for _ in range(120)]
    await asyncio.gather(*(audit.record_request_at_once(db, AT, req(r, "begin", path={"n": r})) for r in ids))

    async def pages() -> dict[str, int]:
        async with db.transaction() as session:
            found = await session.execute(
                text(
                    "SELECT request_id, (ctid::text::point)[0]::int FROM auth.audit_log WHERE request_id = ANY(:ids)"
                ),
                {"ids": ids},
            )
            return {r: page for r, page in found.all()}

    opened = await pages()
    assert len(set(opened.values())) > 2  # the burst spans several pages
    for i in range(0, len(ids), 8):  # calls end a few at a time, as they do under load
        group = ids[i : i + 8]
        await asyncio.gather(
            *(audit.record_request_at_once(db, AT, req(r, "end", status=201)) for r in group)
        )
    closed = await pages()
    moved = [r for r in ids if closed[r] != opened[r]]
    assert moved == []
