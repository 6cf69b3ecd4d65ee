"""The task state machine, pure: which status may follow which, and nothing else.

    pending ─► queued ─► assigned ─► running ─► completed | failed | cancelled | timed_out
                 ▲          │           │
                 └──────────┴───────────┘   (a lost attempt goes back to queued as attempt + 1)

* `pending`: accepted but not yet eligible (reserved for future start times; tasks are created `queued`).
* `queued`: in Postgres, waiting for admission (priority, org concurrency, a pool with its tags).
* `assigned`: admitted; its dispatch is on TASKS (through the outbox), no worker has claimed it yet.
* `running`: claimed by one worker for the current attempt.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Protocol

from browserfleet_contracts.tasks import TERMINAL_STATUSES

STATUSES: Final = (
    "pending",
    "queued",
    "assigned",
    "running",
    "completed",
    "failed",
    "cancelled",
    "timed_out",
)

ALLOWED: Final[dict[str, frozenset[str]]] = {
    "pending": frozenset({"queued", "cancelled", "timed_out"}),
    "queued": frozenset({"assigned", "cancelled", "timed_out", "failed"}),
    # assigned -> queued: the attempt was lost before anyone claimed it
    "assigned": frozenset({"running", "queued", "cancelled", "timed_out", "failed"}),
    # running -> queued: the worker lost its lease; the next attempt waits for admission again
    "running": frozenset({"completed", "failed", "cancelled", "timed_out", "queued"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
    "timed_out": frozenset(),
}

# statuses that hold one of the org's concurrency slots
ACTIVE: Final = frozenset({"assigned", "running"})
CANCELLABLE: Final = frozenset({"pending", "queued", "assigned", "running"})


class TransitionRefused(ValueError):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"a {current} task cannot become {target}")
        self.current = current
        self.target = target


def can_transition(current: str, target: str) -> bool:
    return target in ALLOWED.get(current, frozenset())


def check_transition(current: str, target: str) -> None:
    """Raise `TransitionRefused` unless `current -> target` is allowed."""
    if not can_transition(current, target):
        raise TransitionRefused(current, target)


def allowed_from(target: str) -> frozenset[str]:
    """The statuses a task may become `target` from. A statement that moves tasks in SQL builds its
    condition from this (the claim's `assigned -> running`), so this table stays the only place that says
    who may move a task where."""
    return frozenset(current for current, targets in ALLOWED.items() if target in targets)


class HasStatus(Protocol):
    status: str
    updated_at: datetime


def move(task: HasStatus, target: str, now: datetime) -> None:
    """Every status change made in Python goes through here, so through the state machine."""
    check_transition(task.status, target)
    task.status = target
    task.updated_at = now


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def retry_backoff(attempt_lost: int, *, base: float, cap: float) -> float:
    """Seconds to wait before attempt `attempt_lost + 1`: base, 2·base, 4·base ... capped."""
    return float(min(cap, base * (2 ** max(0, attempt_lost - 1))))
