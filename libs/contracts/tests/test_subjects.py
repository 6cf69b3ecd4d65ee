"""Subject builders, message and event ids (exact strings: consumers dedupe on them), and the stream filters,
checked with NATS' own subject matching against what the builders produce."""

from __future__ import annotations

from typing import get_args

import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.endpoints import all_endpoints
from browserfleet_contracts.events import (
    EventType,
    blocked_event_id,
    log_event_id,
    org_event_id,
    task_event_id,
)
from browserfleet_contracts.tasks import TERMINAL_STATUSES, Priority, TaskStatus


def nats_matches(filter_subject: str, subject: str) -> bool:
    """NATS subject matching: `*` is exactly one token, `>` (last) one or more tokens, else tokens equal."""
    f_tokens, s_tokens = filter_subject.split("."), subject.split(".")
    for i, token in enumerate(f_tokens):
        if token == ">":
            return i == len(f_tokens) - 1 and len(s_tokens) > i
        if i >= len(s_tokens):
            return False
        if token != "*" and token != s_tokens[i]:
            return False
    return len(s_tokens) == len(f_tokens)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*", "a", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        ("*.b.>", "x.b.y", True),
        ("*.b.>", "x.c.y", False),
    ],
)
def test_the_matcher_follows_nats(pattern: str, subject: str, expected: bool) -> None:
    assert nats_matches(pattern, subject) is expected


STREAM_FILTERS = {
    subjects.TASKS_STREAM: subjects.TASKS_ALL,
    subjects.TASK_UPDATES_STREAM: subjects.TASK_UPDATES_ALL,
    subjects.EVENTS_STREAM: subjects.EVENTS_ALL,
}
TASK_ID = "0193a8f0-7c1e-7f3a-9d2b-5b7e1c9a0d11"
ORG_ID = "0193a8f0-0000-7000-8000-000000000001"


def streams_of(subject: str) -> list[str]:
    return [name for name, f in STREAM_FILTERS.items() if nats_matches(f, subject)]


def test_stream_filters_are_the_documented_ones() -> None:
    assert STREAM_FILTERS == {
        "TASKS": "tasks.run.*.*",
        "TASK_UPDATES": "tasks.updates.*.*",
        "EVENTS": "events.*.>",
    }


@pytest.mark.parametrize("pool", [subjects.DEFAULT_POOL, "gpu", "eu-west_1"])
@pytest.mark.parametrize("priority", subjects.PRIORITIES)
def test_every_dispatch_lands_on_tasks_only(pool: str, priority: str) -> None:
    subject = subjects.task_run(pool, priority)
    assert subject == f"tasks.run.{pool}.{priority}"
    assert streams_of(subject) == ["TASKS"]


def test_a_task_update_lands_on_task_updates_only() -> None:
    assert subjects.task_update("w-1", TASK_ID) == f"tasks.updates.w-1.{TASK_ID}"
    assert streams_of(subjects.task_update("w-1", TASK_ID)) == ["TASK_UPDATES"]
    # the scheduler reads the sender's id back from the subject (its bus identity may publish only there)
    assert subjects.task_update_worker(subjects.task_update("w-1", TASK_ID)) == "w-1"
    assert subjects.task_update_worker(f"tasks.updates.{TASK_ID}") is None
    assert subjects.task_update_worker(f"tasks.cancel.w-1.{TASK_ID}") is None


@pytest.mark.parametrize("event", list(EventType), ids=str)
def test_every_event_type_lands_on_events_only(event: EventType) -> None:
    subject = subjects.event(ORG_ID, event)
    assert subject == f"events.{ORG_ID}.{event.value}"
    assert streams_of(subject) == ["EVENTS"]


def test_core_nats_subjects_are_in_no_stream() -> None:
    """A stream capturing a request or a signal would store (and acknowledge) it: none may."""
    core = [
        subjects.task_cancel(TASK_ID),
        subjects.worker_drain("w1"),
        subjects.API_KEY_REVOKED,
        subjects.USER_CHANGED,
        *(e.subject for e in all_endpoints()),
        # live-view frames are never stored: no stream may capture them (or the control subjects)
        subjects.live_start(TASK_ID, "w1"),
        subjects.live_stop(TASK_ID, "w1"),
        subjects.live_frames(TASK_ID, "w1"),
        subjects.live_input(TASK_ID, "w1"),
    ]
    assert {s: streams_of(s) for s in core} == {s: [] for s in core}


def test_live_view_subjects() -> None:
    assert subjects.live_start(TASK_ID, "w1") == f"tasks.live.{TASK_ID}.w1.start"
    assert subjects.live_frames(TASK_ID, "w1") == f"tasks.live.{TASK_ID}.w1.frames"
    assert {
        op: getattr(subjects, f"live_{op}")(TASK_ID, "w1").rsplit(".", 1)[1] for op in subjects.LIVE_OPS
    } == {op: op for op in subjects.LIVE_OPS}


@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "a b", "x>"])
def test_live_view_subjects_refuse_a_token_that_would_widen_them(bad: str) -> None:
    with pytest.raises(ValueError, match="subject token"):
        subjects.live_frames(bad, "w1")
    with pytest.raises(ValueError, match="subject token"):
        subjects.live_start(TASK_ID, bad)


def test_consumer_names() -> None:
    assert subjects.task_run_consumer("default", "urgent") == "pool-default-urgent"
    names = {subjects.task_run_consumer(subjects.DEFAULT_POOL, p) for p in subjects.PRIORITIES}
    assert len(names) == len(subjects.PRIORITIES)


def test_priorities_are_the_task_priorities_urgent_first() -> None:
    assert set(subjects.PRIORITIES) == set(get_args(Priority))
    assert subjects.PRIORITIES[0] == "urgent"
    assert subjects.PRIORITIES[-1] == "low"


# --- message ids -------------------------------------------------------------------------------------
def test_dispatch_msg_id() -> None:
    assert subjects.dispatch_msg_id("t1", 1) == "t1:1"
    assert subjects.dispatch_msg_id("t1", 12) == "t1:12"


def test_update_msg_id() -> None:
    assert subjects.update_msg_id("t1", 2, "started") == "t1:2:started"
    assert subjects.update_msg_id("t1", 2, "result") == "t1:2:result"
    assert subjects.update_msg_id("t1", 2, "log", seq=17) == "t1:2:log:17"
    assert subjects.update_msg_id("t1", 2, "log", seq=0) == "t1:2:log:0"  # the first log line is 0


def test_message_ids_of_different_attempts_differ() -> None:
    assert subjects.dispatch_msg_id("t1", 1) != subjects.dispatch_msg_id("t1", 2)
    assert subjects.update_msg_id("t1", 1, "result") != subjects.update_msg_id("t1", 2, "result")


# --- event types and ids -----------------------------------------------------------------------------
def test_event_types_are_a_closed_list() -> None:
    assert {e.value for e in EventType} == {
        "task.created",
        "task.started",
        "task.completed",
        "task.failed",
        "task.cancelled",
        "task.timed_out",
        "task.log",
        "organization.deleted",
        "security.request_blocked",
        "worker.online",
        "worker.offline",
        "worker.draining",
        "worker.revoked",
        "credential.created",
        "credential.updated",
        "credential.deleted",
        "webhook.endpoint.disabled",
        "webhook.test",
    }
    with pytest.raises(ValueError, match="not a valid EventType"):
        EventType("task.exploded")


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_every_terminal_status_has_its_task_event(status: str) -> None:
    event = EventType.task(status)
    assert event is EventType(f"task.{status}")
    assert event.value == f"task.{status}"


def test_terminal_statuses_are_task_statuses() -> None:
    assert set(get_args(TaskStatus)) >= TERMINAL_STATUSES


@pytest.mark.parametrize("status", sorted(set(get_args(TaskStatus)) - TERMINAL_STATUSES))
def test_a_status_that_is_not_terminal_has_no_event(status: str) -> None:
    """`running` is announced as `task.started` by the worker's update, never as `task.running`."""
    with pytest.raises(ValueError, match="not a valid EventType"):
        EventType.task(status)


def test_task_event_ids() -> None:
    assert task_event_id("t1", EventType.TASK_CREATED) == "t1:created"
    assert task_event_id("t1", EventType.TASK_STARTED, 2) == "t1:2:started"
    assert task_event_id("t1", EventType.TASK_COMPLETED, 3) == "t1:3:completed"
    assert task_event_id("t1", EventType.TASK_FAILED, 1) == "t1:1:failed"
    assert task_event_id("t1", EventType.TASK_CANCELLED) == "t1:cancelled"
    assert task_event_id("t1", EventType.TASK_TIMED_OUT) == "t1:timed_out"


def test_log_event_ids_and_one_orgs_events() -> None:
    assert log_event_id("t1", 2, 0) == "t1:2:log:0"
    assert log_event_id("t1", 2, 17) == "t1:2:log:17"
    assert subjects.org_events(ORG_ID) == f"events.{ORG_ID}.>"
    assert nats_matches(subjects.org_events(ORG_ID), subjects.event(ORG_ID, EventType.TASK_LOG))
    assert not nats_matches(subjects.org_events(ORG_ID), subjects.event("another-org", EventType.TASK_LOG))
    for widening in ("*", ">", "a.b", "", "a b"):
        with pytest.raises(ValueError, match="subject token"):
            subjects.org_events(widening)


def test_org_and_blocked_event_ids() -> None:
    assert org_event_id("o1", EventType.ORGANIZATION_DELETED) == "o1:organization.deleted"
    assert blocked_event_id("t1", 2, 5) == "t1:2:blocked:5"
    assert blocked_event_id("t1", 2, "summary") == "t1:2:blocked:summary"


def test_an_event_type_is_its_string() -> None:
    """Events are published and stored as their value: a StrEnum formats as it, not as its name."""
    assert f"{EventType.TASK_COMPLETED}" == "task.completed"
    assert str(EventType.ORGANIZATION_DELETED) == "organization.deleted"
