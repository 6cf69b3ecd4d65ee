"""The tasks table's indexes (migration 0006): every status change writes a new row version to each index, so
only the rows a read looks at are indexed; uniqueness is unchanged, and the ON CONFLICTs still find the
(partial) unique indexes they name (real PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from browserfleet_contracts.tasks import TERMINAL_STATUSES
from browserfleet_scheduler import repository, state
from browserfleet_scheduler.app import SchedulerApp
from browserfleet_scheduler.creation import build_task_values
from browserfleet_scheduler.models import UNFINISHED_SQL
from sqlalchemy import text

from .conftest import actor, steps_task


def test_the_unfinished_index_covers_every_status_but_the_terminal_ones() -> None:
    listed = {s.strip().strip("'") for s in UNFINISHED_SQL.split(",")}
    assert listed == set(state.STATUSES) - set(TERMINAL_STATUSES)


async def test_only_the_rows_a_read_needs_are_indexed(scheduler: SchedulerApp) -> None:
    async with scheduler.db.transaction() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'scheduler' AND tablename = 'tasks'"
                )
            )
        ).all()
    defs = {name: d for name, d in rows}
    # org_id alone leads three other indexes; status over every version ever written has no reader
    assert "ix_scheduler_tasks_org_id" not in defs
    assert "ix_scheduler_tasks_status" not in defs
    assert "WHERE" in defs["ix_tasks_unfinished"]
    assert "idempotency_key IS NOT NULL" in defs["uq_tasks_org_id_idempotency_key"]
    assert "UNIQUE" in defs["uq_tasks_org_id_idempotency_key"]
    assert "schedule_id IS NOT NULL" in defs["uq_tasks_schedule_id_schedule_tick"]
    assert "UNIQUE" in defs["uq_tasks_schedule_id_schedule_tick"]
    assert "dispatched_at IS NOT NULL" in defs["ix_tasks_org_id_dispatched_at"]


class _RollBack(Exception):
    """Leaves no task behind: a queued one would stand ahead of other tests' creates until a pass took it."""


async def test_a_key_or_a_tick_used_twice_still_makes_one_task(scheduler: SchedulerApp) -> None:
    with pytest.raises(_RollBack):
        await _use_a_key_and_a_tick_twice(scheduler)


async def _use_a_key_and_a_tick_twice(scheduler: SchedulerApp) -> None:
    who = actor()
    key = f"k-{uuid.uuid4().hex}"
    async with scheduler.db.transaction() as session:
        first = build_task_values(who, steps_task(), key, datetime.now(UTC))
        again = build_task_values(who, steps_task(), key, datetime.now(UTC))
        assert await repository.insert_task(session, first)
        assert not await repository.insert_task(session, again)
        # tasks without a key never conflict with each other
        assert await repository.insert_task(
            session, build_task_values(who, steps_task(), None, datetime.now(UTC))
        )
        assert await repository.insert_task(
            session, build_task_values(who, steps_task(), None, datetime.now(UTC))
        )

        tick = datetime(2026, 1, 1, tzinfo=UTC)
        schedule_id = str(uuid.uuid4())
        one = build_task_values(who, steps_task(), None, datetime.now(UTC)) | {
            "schedule_id": schedule_id,
            "schedule_tick": tick,
        }
        two = build_task_values(who, steps_task(), None, datetime.now(UTC)) | {
            "schedule_id": schedule_id,
            "schedule_tick": tick,
        }
        assert await repository.insert_task_for_tick(session, one)
        assert not await repository.insert_task_for_tick(session, two)
        raise _RollBack
