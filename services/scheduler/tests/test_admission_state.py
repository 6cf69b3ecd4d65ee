"""The per-org figures one admission pass reads, from the real database: slots held, and the last dispatch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from browserfleet_core.db import AsyncSession
from browserfleet_devkit.testing import unique_name
from browserfleet_scheduler import repository
from browserfleet_scheduler.models import Task

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _task(org: str, status: str, dispatched_minute: int | None) -> Task:
    dispatched = None if dispatched_minute is None else T0 + timedelta(minutes=dispatched_minute)
    return Task(
        id=unique_name("task-"), org_id=org, kind="steps", status=status, priority="normal", spec={},
        timeout_seconds=1, max_attempts=1, created_at=T0, updated_at=T0, dispatched_at=dispatched,
    )  # fmt: skip


async def test_slots_held_and_last_dispatch_per_org(session: AsyncSession) -> None:
    a, b, idle, unknown = (unique_name(p) for p in ("a", "b", "idle", "unknown"))
    session.add_all(
        [
            # a: two tasks hold a slot; its latest dispatch is a finished task's
            _task(a, "assigned", 5),
            _task(a, "running", 3),
            _task(a, "completed", 9),
            _task(a, "queued", None),
            # b: nothing holds a slot, one dispatch long ago
            _task(b, "failed", 1),
            _task(b, "queued", None),
            # idle: queued only, never dispatched
            _task(idle, "queued", None),
        ]
    )
    await session.flush()
    active, last = await repository.org_admission_state(session, [a, b, idle, unknown])
    assert active == {a: 2}
    assert last == {a: T0 + timedelta(minutes=9), b: T0 + timedelta(minutes=1)}
    assert await repository.org_admission_state(session, []) == ({}, {})
