"""Claims by group commit (`claims.claim_now` -> `repository.claim_writer`): claims that arrive together share
one statement, each granted claim with its attempt row and its `task.started` event; one task claimed many
times at once is granted once; a claim PostgreSQL refuses fails alone (real PostgreSQL, real NATS)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from browserfleet_contracts.tasks import ClaimRequest
from browserfleet_core.messaging import RpcClient
from browserfleet_scheduler import claims, repository
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.models import TaskAttempt, outbox
from browserfleet_scheduler.repository.driver import GroupCommit
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import select

from .conftest import DictAuthenticator, actor, create_assigned, status_of


async def test_claims_that_arrive_together_share_a_statement(
    scheduler: SchedulerApp, rpc: RpcClient, authenticator: DictAuthenticator
) -> None:
    who = actor()
    tasks = [await create_assigned(rpc, who) for _ in range(8)]
    _, identity = authenticator.add()
    writer = repository.claim_writer(scheduler.db)
    before = writer.statements

    async def one(task_id: str) -> Any:
        req = ClaimRequest(task_id=task_id, attempt=1, worker_key="unused", delivery=1)
        return await claims.claim_now(scheduler.db, scheduler.relay, req, identity, scheduler.runtime.policy)

    replies = await asyncio.gather(*(one(t.id) for t in tasks))
    assert all(r.granted for r in replies)
    assert [r.task.task_id for r in replies] == [t.id for t in tasks]
    assert 0 < writer.statements - before < len(tasks), "claims made together were never written together"
    ids = [t.id for t in tasks]
    async with scheduler.db.transaction() as session:
        attempts = (await session.exec(select(TaskAttempt).where(TaskAttempt.task_id.in_(ids)))).all()  # type: ignore[attr-defined]
        started = (
            await session.execute(
                sa_select(func.count()).where(outbox.c.msg_id.in_([f"{t}:1:started" for t in ids]))
            )
        ).scalar_one()
    assert sorted((a.task_id, a.worker_id, a.status, a.delivery) for a in attempts) == sorted(
        (t, identity.worker_id, "running", 1) for t in ids
    )
    assert started == len(tasks)
    for t in tasks:
        assert (await status_of(rpc, who, t.id)).worker_id == identity.worker_id


async def test_one_task_claimed_by_many_at_once_is_granted_once(
    scheduler: SchedulerApp, rpc: RpcClient, authenticator: DictAuthenticator
) -> None:
    who = actor()
    task = await create_assigned(rpc, who)
    identities = [authenticator.add()[1] for _ in range(6)]
    req = ClaimRequest(task_id=task.id, attempt=1, worker_key="unused")
    replies = await asyncio.gather(
        *(
            claims.claim_now(scheduler.db, scheduler.relay, req, i, scheduler.runtime.policy)
            for i in identities
        )
    )
    granted = [r for r in replies if r.granted]
    assert len(granted) == 1
    assert (await status_of(rpc, who, task.id)).worker_id == granted[0].worker_id
    async with scheduler.db.transaction() as session:
        attempts = (await session.exec(select(TaskAttempt).where(TaskAttempt.task_id == task.id))).all()
    assert [(a.attempt, a.worker_id) for a in attempts] == [(1, granted[0].worker_id)]


async def test_a_batch_that_fails_is_written_item_by_item(scheduler: SchedulerApp) -> None:
    written: list[list[str]] = []

    async def write(conn: Any, items: list[str]) -> list[str]:
        written.append(list(items))
        if "bad" in items:
            raise RuntimeError("refused")
        return [f"ok {i}" for i in items]

    writer: GroupCommit[str, str] = GroupCommit(scheduler.db, write)
    first = asyncio.ensure_future(writer.submit("first"))  # in flight while the others arrive
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(writer.submit(i)) for i in ("a", "bad", "b")]
    assert await first == "ok first"
    assert [await r for r in (rest[0], rest[2])] == ["ok a", "ok b"]
    with pytest.raises(RuntimeError, match="refused"):
        await rest[1]
    assert written == [["first"], ["a", "bad", "b"], ["a"], ["bad"], ["b"]]
