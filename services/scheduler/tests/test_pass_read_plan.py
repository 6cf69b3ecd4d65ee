"""The admission pass's read (`repository.dispatch.PASS_READ`) counts each org's slots once per org, not once
per queued candidate: the count scans everything the org runs, so per candidate it cost the pass
O(queued x running) (real PostgreSQL; the plan is read with EXPLAIN ANALYZE in a transaction rolled back)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from browserfleet_scheduler import repository
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.creation import build_task_values
from browserfleet_scheduler.repository.dispatch import PASS_READ
from sqlalchemy import text

from .conftest import actor, steps_task


class _RollBack(Exception):
    pass


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found += _nodes(child)
    return found


async def _explain_pass(scheduler: SchedulerApp, org_id: str, queued: int) -> tuple[int, int]:
    """(loops of the slot count, candidates of that org read) of one pass over `queued` new tasks of one org."""
    explain = text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(PASS_READ.element))
    try:
        async with scheduler.db.transaction() as session:
            for _ in range(queued):
                values = build_task_values(actor(org_id), steps_task(), None, datetime.now(UTC))
                assert await repository.insert_task(session, values)
            params = {"lock_key": repository.ADMISSION_LOCK, "now": datetime.now(UTC), "scan": 1000}
            raw = (await session.execute(explain, params)).scalar_one()
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            counts = [n for n in _nodes(plan) if n.get("Relation Name") == "tasks" and n.get("Alias") == "a"]
            loops = max((int(n["Actual Loops"]) for n in counts), default=0)
            rows = (await session.execute(PASS_READ, params)).all()
            mine = sum(1 for r in rows if r.org_id == org_id)
            raise _RollBack(loops, mine)
    except _RollBack as done:
        return done.args[0], done.args[1]
    raise AssertionError("the transaction was not rolled back")


async def test_the_pass_counts_an_orgs_slots_once_whatever_its_queue(scheduler: SchedulerApp) -> None:
    org_id = str(uuid.uuid4())
    for _ in range(20):  # the service's own pass may hold the admission lock at that moment: try again
        loops, mine = await _explain_pass(scheduler, org_id, queued=6)
        if mine:
            break
    assert mine == 6, "the pass never held the lock"
    # one count per org among the candidates (other tests may have left queued tasks of their own orgs)
    async with scheduler.db.transaction() as session:
        others = (
            await session.execute(
                text("SELECT count(DISTINCT org_id) FROM scheduler.tasks WHERE status = 'queued'")
            )
        ).scalar_one()
    assert 1 <= loops <= 1 + int(others), f"the slots were counted {loops} times for {1 + int(others)} org(s)"
