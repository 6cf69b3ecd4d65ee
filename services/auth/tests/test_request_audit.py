"""A call's audit entry is written the same whether auth takes its one-statement path
(`audit.record_request_at_once`: a new call opened, an open call closed with no error code) or its transaction
(`audit.record_request`): each sequence of the gateway's records is played through both, on real PostgreSQL,
under two request ids, and the two entries must match column for column. The sequences cover the fast cases
and every case that must fall back: a repeated phase, an error code, a call refused before it was opened,
an entry auth wrote first."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from browserfleet_auth import audit
from browserfleet_auth.models import AuditLog
from browserfleet_auth.repository.audit_batch import RequestAuditBatch
from browserfleet_contracts.auth import RequestAudit
from browserfleet_contracts.common import Actor
from browserfleet_core.db import Database
from sqlmodel import col, select

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ROUTE = "POST /api/v1/tasks"


def begin(**extra: Any) -> dict[str, Any]:
    return {"phase": "begin", "action": "api.create_task", "route": ROUTE, **extra}


def end(status: int, **extra: Any) -> dict[str, Any]:
    return {"phase": "end", "action": "api.create_task", "route": ROUTE, "status": status, **extra}


SEQUENCES: dict[str, list[Any]] = {  # a step: RequestAudit fields, or "auth-detail"
    "opened then closed with the id it created": [begin(), end(201, target="task-1")],
    "a phase repeated changes nothing": [begin(), begin(), end(200), end(500)],
    "closed with an error code": [begin(path={"task_id": "t-9"}), end(409, code="conflict")],
    "refused before it was opened": [end(403, code="forbidden")],
    "a failure without a code": [begin(path={"task_id": "t-7"}, target="t-7"), end(502)],
    "an entry auth wrote first": ["auth-detail", begin(), end(204)],
}


@pytest.fixture(scope="module")
async def db(fresh_database: Callable[[], str]) -> AsyncIterator[Database]:
    database = Database(fresh_database(), "auth", pool_size=2)
    yield database
    await RequestAuditBatch.of(database).close()
    await database.dispose()


async def play(db: Database, steps: list[Any], request_id: str, *, at_once: bool) -> list[dict[str, Any]]:
    actor = Actor(org_id="org-1", user_id="user-1", role="admin", client_ip="10.0.0.9", request_id=request_id)
    for step in steps:
        if step == "auth-detail":  # a change auth recorded in the call's name before the gateway's record
            async with db.transaction() as session:
                await audit.record(session, AT, "user.role_changed", actor=actor, target="user-2")
            continue
        req = RequestAudit(actor=actor, **step)
        if at_once:
            await audit.record_request_at_once(db, AT, req)
        else:
            await db.run(audit.record_request, AT, req)
    async with db.transaction() as session:
        rows = (
            await session.exec(
                select(AuditLog).where(AuditLog.request_id == request_id).order_by(col(AuditLog.id))
            )
        ).all()
    assert rows, "no entry written"
    return [row.model_dump(exclude={"id", "request_id"}) for row in rows]


@pytest.mark.parametrize("name", list(SEQUENCES))
async def test_one_statement_and_the_transaction_write_the_same_entry(db: Database, name: str) -> None:
    steps = SEQUENCES[name]
    in_transaction = await play(db, steps, uuid.uuid4().hex, at_once=False)
    at_once = await play(db, steps, uuid.uuid4().hex, at_once=True)
    assert at_once == in_transaction


async def test_the_closed_entry_says_what_happened(db: Database) -> None:
    """The comparison above would pass if both paths were wrong alike: one sequence, spelled out."""
    (entry,) = await play(db, [begin(path={"task_id": "t-1"}), end(201, target="t-2")], "r1", at_once=True)
    assert (entry["outcome"], entry["status"], entry["target"]) == ("success", 201, "t-2")
    assert entry["detail"] == {"path": {"task_id": "t-1"}} and entry["route"] == ROUTE
    (refused,) = await play(db, [begin(), end(403, code="forbidden")], "r2", at_once=True)
    assert (refused["outcome"], refused["status"], refused["detail"]) == (
        "refused",
        403,
        {"code": "forbidden"},
    )


async def test_the_common_call_takes_no_transaction(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a new call's entry and closing it without an error code never reach `record_request`."""

    async def refuse(*_: Any) -> None:
        raise AssertionError("fell back to the transaction")

    monkeypatch.setattr(audit, "record_request", refuse)
    (entry,) = await play(db, [begin(target="t-3"), end(200)], "r3", at_once=True)
    assert (entry["outcome"], entry["status"]) == ("success", 200)
