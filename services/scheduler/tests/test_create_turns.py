"""Creates of one scheduler that overlap each admit their own task (`creation.create_task_now`): the statement
only tries the admission lock and must see the last admission in its snapshot, so without turns the second of
two overlapping creates left its task queued for the admission pass, and a steady load sent almost every task
through the pass. They are group-committed (`creation.AdmitGate`): overlapping creates go in one transaction.
On the real database; the package's running scheduler (another policy, which never admits these tasks' tag)
may hold the lock for a moment, so a round is tried again when it did."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import CreateTaskRequest
from browserfleet_core.db import Database
from browserfleet_core.outbox import OutboxRelay
from browserfleet_scheduler import creation
from browserfleet_scheduler.models import Task, outbox
from browserfleet_scheduler.policy import Policy
from sqlmodel import select

from .conftest import steps_task


@pytest.fixture
async def db(migrated: str) -> AsyncIterator[Database]:
    database = Database(migrated, "scheduler", pool_size=12)
    yield database
    await database.dispose()


async def test_overlapping_creates_each_admit_their_own_task(db: Database) -> None:
    tag = uuid.uuid4().hex[:8]
    policy = Policy(pools={f"pool-{tag}": frozenset({tag})}, default_concurrency=1000)
    relay = OutboxRelay(db, outbox)  # never started: the rows stay in the outbox
    together = 12  # past the four that once took turns one statement at a time
    rounds: list[list[str]] = []
    writer = creation.admit_gate(db).writer
    for _ in range(10):
        statements = writer.statements
        who = Actor(org_id=f"org-{uuid.uuid4().hex[:12]}", user_id="u1", role="user")
        reqs = [CreateTaskRequest(actor=who, task=steps_task(worker_tags=[tag])) for _ in range(together)]
        done = await asyncio.gather(*(creation.create_task_now(db, relay, r, policy) for r in reqs))
        rounds.append([t.status for t in done])
        if all(t.status == "assigned" for t in done):
            # gathered before the writer's first turn: one transaction for all of them
            assert writer.statements - statements == 1, writer.statements - statements
            return
        # what another admitter's lock left queued is not ahead of the next round's tasks (another org)
        async with db.transaction() as session:
            for row in (await session.exec(select(Task).where(Task.org_id == who.org_id))).all():
                if row.status == "queued":
                    row.status = "cancelled"
        await asyncio.sleep(0.05)
    raise AssertionError(f"no round of {together} overlapping creates was admitted whole: {rounds}")
