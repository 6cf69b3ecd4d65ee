"""The batch statements (claims, results, the admission pass's write) find their tasks by id, never through a
status index: PostgreSQL, trusting statistics of a quiet table that showed no task in that status, walked every
task in it (hundreds under load) for a batch of five. Read with EXPLAIN on real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.repository.claim_batch import CLAIM_MANY, claim_params
from browserfleet_scheduler.repository.dispatch import PASS_WRITE
from browserfleet_scheduler.repository.results import FINISH, Finish, finish_params
from browserfleet_scheduler.repository.tasks import Claim
from sqlalchemy import text

# what indexes a status (or a status-partial index with no condition of its own: a walk of all its tasks)
_BY_STATUS = {"ix_tasks_unfinished", "ix_tasks_active_org", "ix_tasks_queued"}


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found += _nodes(child)
    return found


async def _indexes_used(scheduler: SchedulerApp, sql: str, params: dict[str, Any]) -> set[str]:
    async with scheduler.db.statement() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        async with driver.cursor() as cursor:  # type: ignore[union-attr]
            await cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            (raw,) = await cursor.fetchone()
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    return {n["Index Name"] for n in _nodes(plan) if n.get("Relation Name") == "tasks" and "Index Name" in n}


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def test_a_batch_of_claims_finds_its_tasks_by_id(scheduler: SchedulerApp) -> None:
    now = datetime.now(UTC)
    claims = [
        (Claim(task_id, 1, "w", None, 1, now), ("events.", ".task.started", f"{task_id}:1:started", "{}"))
        for task_id in _ids(5)
    ]
    async with scheduler.db.statement() as conn:
        sql = CLAIM_MANY.sql(conn)
    assert not (await _indexes_used(scheduler, sql, claim_params(claims))) & _BY_STATUS


async def test_a_batch_of_results_finds_its_tasks_by_id(scheduler: SchedulerApp) -> None:
    finishes = [
        Finish(
            task_id, 1, "w", "completed", "{}", None, None, 1.0, "[]", ("e.", ".t", f"{task_id}:1:done", "{}")
        )
        for task_id in _ids(5)
    ]
    async with scheduler.db.statement() as conn:
        sql = FINISH.sql(conn)
    assert not (await _indexes_used(scheduler, sql, finish_params(finishes, datetime.now(UTC)))) & _BY_STATUS


async def test_the_pass_write_finds_its_tasks_by_id(scheduler: SchedulerApp) -> None:
    admitted, waiting = _ids(5), _ids(5)
    params = {
        "now": datetime.now(UTC),
        "a_ids": admitted,
        "a_pools": ["default"] * 5,
        "a_details": ["d"] * 5,
        "w_ids": waiting,
        "w_details": ["w"] * 5,
        "m_subjects": ["s"] * 5,
        "m_payloads": [b"{}"] * 5,
        "m_msg_ids": [f"{i}:1" for i in admitted],
    }
    async with scheduler.db.statement() as conn:
        sql = str(text(PASS_WRITE.text).compile(dialect=conn.dialect))
    assert not (await _indexes_used(scheduler, sql, params)) & _BY_STATUS
