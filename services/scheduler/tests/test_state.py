"""The state machine and the admission order, pure (no NATS, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from browserfleet_scheduler import state
from browserfleet_scheduler.admission import fair_order
from browserfleet_scheduler.models import Task
from browserfleet_scheduler.policy import Policy

ALLOWED = {
    ("pending", "queued"), ("pending", "cancelled"), ("pending", "timed_out"),
    ("queued", "assigned"), ("queued", "cancelled"), ("queued", "timed_out"), ("queued", "failed"),
    ("assigned", "running"), ("assigned", "queued"), ("assigned", "cancelled"), ("assigned", "timed_out"),
    ("assigned", "failed"),
    ("running", "completed"), ("running", "failed"), ("running", "cancelled"), ("running", "timed_out"),
    ("running", "queued"),
}  # fmt: skip
EVERY_PAIR = [(a, b) for a in state.STATUSES for b in state.STATUSES]


@pytest.mark.parametrize(("current", "target"), EVERY_PAIR)
def test_every_transition_is_allowed_or_refused(current: str, target: str) -> None:
    if (current, target) in ALLOWED:
        state.check_transition(current, target)
        assert state.can_transition(current, target)
    else:
        with pytest.raises(state.TransitionRefused):
            state.check_transition(current, target)
        assert not state.can_transition(current, target)


def test_terminal_states_are_dead_ends() -> None:
    for status in ("completed", "failed", "cancelled", "timed_out"):
        assert state.is_terminal(status) and not state.ALLOWED[status]
    assert not state.is_terminal("running")


def test_retry_backoff_doubles_and_caps() -> None:
    assert [state.retry_backoff(n, base=2, cap=10) for n in (1, 2, 3, 4)] == [2, 4, 8, 10]


def test_route_needs_every_tag_and_prefers_the_closest_pool() -> None:
    policy = Policy(pools={"default": frozenset(), "gpu": frozenset({"gpu"}), "eu": frozenset({"gpu", "eu"})})
    assert policy.route([]) == "default"
    assert policy.route(["gpu"]) == "gpu"
    assert policy.route(["eu", "gpu"]) == "eu"
    assert policy.route(["arm"]) is None


def test_plan_limits() -> None:
    policy = Policy(plan_limits={"free": 1}, default_concurrency=5)
    assert (policy.limit_for("free"), policy.limit_for(None), policy.limit_for("unknown")) == (1, 5, 5)


def _task(org: str, priority: str, minute: int) -> Task:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    return Task(
        id=f"{org}-{priority}-{minute}", org_id=org, kind="steps", status="queued", priority=priority,
        spec={}, timeout_seconds=1, max_attempts=1, created_at=at, updated_at=at,
    )  # fmt: skip


def test_fair_order_priority_first_then_orgs_take_turns_fifo_within_org() -> None:
    # org a has a backlog of 4 normal tasks queued before org b's 2; c has one urgent task last of all
    tasks = [_task("a", "normal", m) for m in range(4)] + [_task("b", "normal", 10), _task("b", "normal", 11)]
    tasks.append(_task("c", "urgent", 20))
    tasks.sort(key=lambda t: ({"urgent": 0, "normal": 2}[t.priority], t.created_at))
    order = [t.id for t in fair_order(tasks, last_served={})]
    assert order[0] == "c-urgent-20"
    assert order[1:] == [
        "a-normal-0", "b-normal-10", "a-normal-1", "b-normal-11", "a-normal-2", "a-normal-3",
    ]  # fmt: skip
    # the org served most recently goes after one that has waited
    recent = {"a": datetime(2026, 1, 2, tzinfo=UTC), "b": datetime(2026, 1, 1, tzinfo=UTC)}
    order = [t.id for t in fair_order(tasks, last_served=recent)]
    assert order[1:3] == ["b-normal-10", "a-normal-0"]
