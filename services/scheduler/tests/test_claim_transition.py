"""The claim's fast path moves a task to `running` in SQL; the statuses it moves it from must be exactly
those the state machine (`state.ALLOWED`) allows, so there is one definition of that transition."""

from __future__ import annotations

import re

import pytest
from browserfleet_contracts.tasks import TaskCreate
from browserfleet_core.db import utcnow
from browserfleet_scheduler import repository, state
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.creation import build_task_values

from .conftest import actor


def _allowed_into(target: str) -> set[str]:
    """Worked out from the table pair by pair, independently of `state.allowed_from`."""
    return {current for current in state.STATUSES if state.can_transition(current, target)}


def test_the_claim_sql_condition_is_the_state_machines() -> None:
    sql = " ".join(str(repository.CLAIM).split())
    update = re.search(r"UPDATE scheduler\.tasks SET status = '(\w+)'.*? WHERE (.*?) RETURNING", sql)
    assert update is not None, sql
    target, where = update[1], update[2]
    conditions = re.findall(r"\bstatus\s*(=|IN|<>|!=)\s*(\([^)]*\)|'\w+')", where)
    assert len(conditions) == 1, f"one status condition expected in {where!r}"
    claimable = set(re.findall(r"'(\w+)'", conditions[0][1]))
    assert target == "running"
    assert claimable == _allowed_into(target) == state.allowed_from(target)


class _RolledBack(Exception):
    pass


@pytest.mark.parametrize("status", state.STATUSES)
async def test_the_claim_sql_moves_to_running_exactly_when_the_state_machine_allows(
    scheduler: SchedulerApp, status: str
) -> None:
    """The statement itself, on PostgreSQL, for a task in each status (rolled back: no other test sees it)."""
    task = TaskCreate(steps=[{"action": "navigate", "url": "https://example.test/"}])
    values = build_task_values(actor(), task, None, utcnow())
    values["status"] = status
    try:
        async with scheduler.db.transaction() as session:
            assert await repository.insert_task(session, values)
            claim = repository.Claim(
                values["id"], 1, worker_id="w-1", worker_org_id=None, delivery=1, now=utcnow()
            )
            row = await repository.claim_assigned(session, claim)
            raise _RolledBack(row is not None)
    except _RolledBack as done:
        claimed = done.args[0]
    assert claimed == state.can_transition(status, "running")
