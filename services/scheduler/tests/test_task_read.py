"""The API's read of one task (`queries.read_task`), which runs its statement on the driver's connection
rather than through SQLAlchemy: the same answers, and a connection that died under it is not handed out
again by the pool."""

from __future__ import annotations

import logging

import psycopg
import pytest
from browserfleet_contracts.tasks import GetTaskRequest
from browserfleet_core.db import Database
from browserfleet_core.errors import NotFound, database_unavailable
from browserfleet_scheduler import queries
from browserfleet_scheduler.app import SCHEMA, SchedulerApp
from browserfleet_scheduler.views import to_public
from sqlalchemy import text

from .conftest import actor, create

APP = "bf_read_test"


async def test_read_task_is_the_orm_view(scheduler: SchedulerApp, rpc: object) -> None:
    who = actor()
    task = await create(rpc, who, title="read me", metadata={"k": "v"})  # type: ignore[arg-type]
    read = await queries.read_task(scheduler.db, GetTaskRequest(actor=who, task_id=task.id))
    async with scheduler.db.transaction() as session:
        orm = to_public(await queries.own_task(session, who.org_id, task.id))
    assert read == orm == task
    # another org's task, and an id that is not one, are not found
    for other, task_id in ((actor(), task.id), (who, "not-a-uuid")):
        with pytest.raises(NotFound):
            await queries.read_task(scheduler.db, GetTaskRequest(actor=other, task_id=task_id))


async def test_a_read_whose_connection_died_is_503_then_the_pool_reconnects(
    scheduler: SchedulerApp, rpc: object, migrated: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    who = actor()
    task = await create(rpc, who)  # type: ignore[arg-type]
    req = GetTaskRequest(actor=who, task_id=task.id)
    # one connection, pinged only after a long idle (as a service's pool): the dead one is met by the read
    db = Database(f"{migrated}?application_name={APP}", SCHEMA, pool_size=1, ping_after_idle=3600)
    try:
        assert (await queries.read_task(db, req)).id == task.id
        async with scheduler.db.statement() as conn:
            killed = await conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :app"),
                {"app": APP},
            )
            assert killed.scalars().all() == [True]
        with pytest.raises(psycopg.OperationalError) as failed:
            await queries.read_task(db, req)
        assert database_unavailable(failed.value) is not None
        assert (await queries.read_task(db, req)).id == task.id
        # dropped as dead, not found dead by the pool's reset on its way back (an error in the log)
        assert not [r for r in caplog.records if r.name.startswith("sqlalchemy.pool")], caplog.text
    finally:
        await db.dispose()
