"""A create that admits its own task (`creation.create_task_now` with a policy), on the real database: it never
overruns an org's limit when creates and admission passes race, and it never overtakes a queued task that
fair order would serve first.

The tasks carry a tag of their own pool, which only the policy given here routes to: the package's running
scheduler (another policy) never admits them, it only notes that no pool has their tag."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import CreateTaskRequest, TaskPublic
from browserfleet_core.db import Database, utcnow
from browserfleet_core.outbox import OutboxRelay
from browserfleet_scheduler import admission, creation, repository
from browserfleet_scheduler.models import Task, outbox
from browserfleet_scheduler.policy import Policy
from sqlalchemy import func, select, text
from sqlmodel import select as model_select

from .conftest import steps_task

PLANS = {"duo": 2, "solo": 1}


@pytest.fixture
async def db(migrated: str) -> AsyncIterator[Database]:
    database = Database(migrated, "scheduler", pool_size=12)
    yield database
    await database.dispose()


def _policy(tag: str) -> Policy:
    return Policy(pools={f"pool-{tag}": frozenset({tag})}, plan_limits=PLANS, default_concurrency=1000)


def _org(plan: str) -> Actor:
    return Actor(org_id=f"org-{uuid.uuid4().hex[:12]}", user_id="u1", role="user", plan=plan)


async def _create(
    db: Database, relay: OutboxRelay, who: Actor, tag: str, policy: Policy | None, priority: str = "normal"
) -> TaskPublic:
    req = CreateTaskRequest(actor=who, task=steps_task(worker_tags=[tag], priority=priority))
    return await creation.create_task_now(db, relay, req, policy)


async def _statuses(db: Database, org_id: str) -> list[str]:
    async with db.transaction() as session:
        rows = await session.exec(model_select(Task.status).where(Task.org_id == org_id))
        return sorted(rows.all())


async def _admit_until_free(db: Database, relay: OutboxRelay, policy: Policy) -> list[str]:
    """One admission pass, asked again while another admitter holds the lock."""
    for _ in range(600):
        outcome = await db.run(admission.admission_pass, relay, policy, utcnow())
        if not outcome.busy:
            return outcome.admitted
        await asyncio.sleep(0.01)
    raise AssertionError("admission lock never free")


async def _admitted_create(
    db: Database, relay: OutboxRelay, who: Actor, tag: str, policy: Policy, priority: str = "normal"
) -> TaskPublic:
    """A create that must be admitted at once; the package's scheduler may hold the lock for a moment,
    and a create that finds it held leaves its task queued (then cancelled here, so it is not ahead of the
    next one), so it is tried again."""
    for _ in range(200):
        task = await _create(db, relay, who, tag, policy, priority)
        if task.status == "assigned":
            return task
        async with db.transaction() as session:
            row = await session.get(Task, task.id)
            assert row is not None and row.status == "queued"
            row.status = "cancelled"
        await asyncio.sleep(0.01)
    raise AssertionError("no create was admitted")


@pytest.mark.parametrize(("plan", "limit"), [("solo", 1), ("duo", 2)])
async def test_racing_creates_and_passes_never_overrun_the_limit(db: Database, plan: str, limit: int) -> None:
    tag = uuid.uuid4().hex[:8]
    policy = _policy(tag)
    relay = OutboxRelay(db, outbox)  # never started: the rows stay in the outbox
    creates, passes = 8, 2
    for _ in range(12):
        who = _org(plan)
        work = [_create(db, relay, who, tag, policy) for _ in range(creates)]
        done = await asyncio.gather(
            *work, *(db.run(admission.admit, relay, policy, utcnow()) for _ in range(passes))
        )
        answered = [t.status for t in done[:creates] if isinstance(t, TaskPublic)]
        assert answered.count("assigned") <= limit, answered
        await _admit_until_free(db, relay, policy)  # whatever the races left queued
        statuses = await _statuses(db, who.org_id)
        assert statuses.count("assigned") == limit, statuses
        assert statuses.count("queued") == creates - limit, statuses
        # each admitted task has exactly one dispatch in the outbox
        async with db.transaction() as session:
            ids = (
                await session.exec(
                    model_select(Task.id).where(Task.org_id == who.org_id, Task.status == "assigned")
                )
            ).all()
            sent = await session.exec(
                select(func.count()).where(outbox.c.msg_id.in_([f"{i}:1" for i in ids]))  # type: ignore[call-overload]
            )
            assert sent.one()[0] == limit


async def test_a_create_admits_only_what_no_queued_task_should_precede(db: Database) -> None:
    tag = uuid.uuid4().hex[:8]
    policy = _policy(tag)
    relay = OutboxRelay(db, outbox)
    x = _org("duo")

    # the org's own task, queued before: the new one waits behind it (FIFO within an org)
    ahead = await _create(db, relay, x, tag, None)
    assert ahead.status == "queued"
    behind = await _create(db, relay, x, tag, policy)
    assert behind.status == "queued"
    assert await _admit_until_free(db, relay, policy) == [ahead.id, behind.id]

    # another org's urgent task that may start: fair order serves it first, so a normal one waits
    y = _org("duo")
    urgent = await _create(db, relay, y, tag, None, priority="urgent")
    normal = await _create(db, relay, _org("duo"), tag, policy)
    assert normal.status == "queued"
    admitted = await _admit_until_free(db, relay, policy)
    assert admitted[0] == urgent.id and normal.id in admitted

    # a queued task of an org at its limit waits for its own org only: it does not hold others back
    z = _org("solo")
    await _admitted_create(db, relay, z, tag, policy)
    stuck = await _create(db, relay, z, tag, policy)
    assert stuck.status == "queued"
    await _admit_until_free(db, relay, policy)
    assert await _statuses(db, z.org_id) == ["assigned", "queued"]
    free = await _admitted_create(db, relay, _org("duo"), tag, policy)
    assert free.status == "assigned"
    assert await _statuses(db, z.org_id) == ["assigned", "queued"], "the org at its limit stays at it"


async def test_a_create_whose_snapshot_misses_the_last_admission_leaves_its_task_queued(db: Database) -> None:
    """The race a lock taken inside one statement leaves open: the statement's snapshot was taken before it got
    the lock, so an admitter that committed in between is not in its count of the org's slots. Every admitter
    writes its transaction id to `admission_xid` while it holds the lock; here a transaction still open (so in
    no snapshot) has written it, as such an admitter would have: the create must not trust its count."""
    tag = uuid.uuid4().hex[:8]
    policy = _policy(tag)
    relay = OutboxRelay(db, outbox)
    async with db.engine.connect() as other:
        await other.execute(
            text(
                "SELECT setval('scheduler.admission_xid', CAST(CAST(pg_current_xact_id() AS text) AS bigint))"
            )
        )
        stale = await _create(db, relay, _org("duo"), tag, policy)
        assert stale.status == "queued"
        # the pass reads the slots again in a statement of its own, and admits it
        assert await _admit_until_free(db, relay, policy) == [stale.id]
        await other.commit()
    # that transaction committed: in every snapshot from now on
    await _admitted_create(db, relay, _org("duo"), tag, policy)


def _item(who: Actor, tag: str, policy: Policy, task_id: str | None = None) -> repository.CreateAdmit:
    """One create as `creation.create_task_now` hands it to the group writer."""
    req = CreateTaskRequest(actor=who, task=steps_task(worker_tags=[tag]))
    spec = req.task.spec()
    values = creation.build_task_values(who, req.task, None, utcnow(), spec)
    if task_id is not None:
        values["id"] = task_id
    subject, envelope, msg_id = creation._created_event(who.org_id, values)
    admittable = creation._admittable(values, spec, policy, ())
    assert admittable is not None
    return repository.CreateAdmit(
        creation._json_columns(values),
        (subject, envelope.model_dump_json().encode(), msg_id),
        admittable,
        ("dispatched", "waiting for admission"),
        values["created_at"],
    )


async def test_a_group_of_creates_in_one_transaction_admits_in_order_up_to_the_limit(db: Database) -> None:
    """`create_and_admit_many`: each statement sees the ones before it, so a group of one org's creates admits
    the first of them up to its plan's limit and leaves the rest queued, in order, with one dispatch per
    admitted task. The statements after the first that took the lock see their own transaction as the last
    admitter, which no snapshot shows as committed: they must trust it (else only the first was admitted)."""
    tag = uuid.uuid4().hex[:8]
    policy = _policy(tag)
    for _ in range(50):
        who = _org("duo")
        items = [_item(who, tag, policy) for _ in range(5)]
        async with db.statement() as conn:
            created = await repository.create_and_admit_many(conn, items)
        if not any(c.admitted for c in created):  # the package's scheduler held the lock: all left queued
            async with db.transaction() as session:
                await session.execute(
                    text("UPDATE scheduler.tasks SET status = 'cancelled' WHERE org_id = :o"),
                    {"o": who.org_id},
                )
            await asyncio.sleep(0.02)
            continue
        assert [c.admitted for c in created] == [True, True, False, False, False]
        assert [len(c.outbox) for c in created] == [
            2,
            2,
            1,
            1,
            1,
        ]  # task.created, and the dispatch if admitted
        async with db.transaction() as session:
            rows = await session.exec(model_select(Task.id, Task.status).where(Task.org_id == who.org_id))
            status = dict(rows.all())
        assert [status[i.columns["id"]] for i in items] == [
            "assigned",
            "assigned",
            "queued",
            "queued",
            "queued",
        ]
        return
    raise AssertionError("the admission lock was never free")


async def test_a_create_the_database_refuses_fails_alone_in_its_group(db: Database) -> None:
    """A group whose transaction fails is written again one create at a time: the one PostgreSQL refuses (here
    a task id already taken) gets the error, the others are created, and nothing of the failed transaction
    stays (no outbox row of the refused create)."""
    tag = uuid.uuid4().hex[:8]
    policy = _policy(tag)
    gate = creation.AdmitGate(db)
    who = _org("duo")
    first = _item(who, tag, policy)
    clash = _item(who, tag, policy, task_id=first.columns["id"])
    last = _item(who, tag, policy)
    statements = gate.writer.statements
    done = await asyncio.gather(*(gate.create(i) for i in (first, clash, last)), return_exceptions=True)
    assert gate.writer.statements - statements == 4, "one group, then each of its three alone"
    assert isinstance(done[1], psycopg.errors.UniqueViolation), done[1]
    assert isinstance(done[0], repository.Created) and isinstance(done[2], repository.Created)
    async with db.transaction() as session:
        ids = (await session.exec(model_select(Task.id).where(Task.org_id == who.org_id))).all()
        # the clash's task.created has the first task's msg id (the id is the task's): the first's alone
        sent = await session.exec(
            select(func.count()).where(outbox.c.msg_id == first.created[2])  # type: ignore[call-overload]
        )
        assert sent.one()[0] == 1
    assert sorted(ids) == sorted([first.columns["id"], last.columns["id"]])
