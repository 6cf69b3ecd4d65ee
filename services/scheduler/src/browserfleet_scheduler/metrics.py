"""`browserfleet_tasks_total{status}`: tasks entering each status, counted once per committed transition.

Every transition but one commits an outbox message that names it, so the transitions are counted from the
rows the relay hands over after each commit (`OutboxRelay.on_committed`), whichever path wrote them (an ORM
transaction, a group-committed create, a claim or a batch of results in one statement):

* `task.created` -> `queued`; a dispatch on `tasks.run.*` -> `assigned` (a create that admits its own task
  commits both); `task.started` -> `running`; `task.completed` / `failed` / `cancelled` / `timed_out` -> the
  same status.
* A lost attempt going back to `queued` commits no message: `attempts.lose` counts it after its commit.

A row is handed over only for a commit, and only if its msg id was new, so a rolled-back or refused change,
or a redelivered one that changed nothing, is never counted. `pending` is never entered (tasks are created
`queued`), and `task.log` is no transition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from browserfleet_contracts import subjects
from browserfleet_contracts.events import EventType
from browserfleet_core.db import AsyncSession, after_commit
from browserfleet_core.outbox import OutboxRow
from prometheus_client import Counter

from .state import STATUSES

TASKS: Final = Counter(
    "browserfleet_tasks_total", "Tasks entering each status (committed transitions)", ["status"]
)
# children made once: `.labels()` looks its child up under a lock, per call
_CHILDREN: Final = {status: TASKS.labels(status=status) for status in STATUSES if status != "pending"}
_BY_EVENT: Final = {
    EventType.TASK_CREATED.value: _CHILDREN["queued"],
    EventType.TASK_STARTED.value: _CHILDREN["running"],
    **{EventType.task(s).value: _CHILDREN[s] for s in ("completed", "failed", "cancelled", "timed_out")},
}
_MARK = "\x00"
# `tasks.run.` from the one declaration of a dispatch's subject
DISPATCH_HEAD: Final = subjects.task_run(_MARK, _MARK).split(_MARK)[0]


def count_committed(rows: Sequence[OutboxRow]) -> None:
    """`OutboxRelay.on_committed`: one increment per committed row that announces a transition."""
    assigned = _CHILDREN["assigned"]
    for row in rows:
        subject = row[1]
        if subject.startswith(DISPATCH_HEAD):
            assigned.inc()
            continue
        # `events.<org>.task.<event>`: an org id is one subject token
        child = _BY_EVENT.get(subject.split(".", 2)[-1])
        if child is not None:
            child.inc()


async def _requeued() -> None:
    _CHILDREN["queued"].inc()


def count_requeue(session: AsyncSession) -> None:
    """A lost attempt's task back to `queued`, counted once `session` commits (it commits no message)."""
    after_commit(session, _requeued)
