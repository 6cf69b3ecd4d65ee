"""Admission: which queued tasks are dispatched now (priority, orgs taking turns, each org's concurrency
limit, a worker pool with the task's tags), and their TASKS messages through the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from browserfleet_contracts import subjects
from browserfleet_contracts.tasks import TaskDispatch, TaskSpec
from browserfleet_core.db import AsyncSession, after_commit
from browserfleet_core.outbox import OutboxRelay

from . import repository, state
from .policy import Policy, Pool


class Queued(Protocol):
    """What fair order reads of a queued task (a Task, or the pass's `repository.Candidate`)."""

    @property
    def id(self) -> str: ...
    @property
    def org_id(self) -> str: ...
    @property
    def priority(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


Q = TypeVar("Q", bound=Queued)


def fair_order(candidates: list[Q], last_served: dict[str, datetime]) -> list[Q]:
    """Priority first; within one priority, orgs take turns (the k-th task of every org before the
    (k+1)-th of any), the org served longest ago first; FIFO within an org."""
    seen: dict[tuple[str, str], int] = {}
    keyed: list[tuple[int, int, datetime, datetime, str, Q]] = []
    never = datetime.min.replace(tzinfo=UTC)
    for t in candidates:  # already priority then FIFO ordered
        k = seen.get((t.priority, t.org_id), 0)
        seen[(t.priority, t.org_id)] = k + 1
        rank = repository.PRIORITY_RANK.get(t.priority, 9)
        keyed.append((rank, k, last_served.get(t.org_id, never), t.created_at, t.id, t))
    keyed.sort(key=lambda x: x[:5])
    return [x[5] for x in keyed]


async def admit(
    session: AsyncSession,
    relay: OutboxRelay,
    policy: Policy,
    now: datetime,
    registered: Sequence[Pool] = (),
) -> list[str]:
    """One admission pass: dispatch what may run now, routing by POOLS and the `registered` pools. Returns
    the admitted task ids (none when another admitter holds the lock: `admission_pass` says so)."""
    return (await admission_pass(session, relay, policy, now, registered)).admitted


@dataclass(frozen=True)
class PassOutcome:
    admitted: list[str]
    busy: bool  # another admitter (a create, another replica's pass) held the lock: nothing was read
    seen: int = 0  # queued tasks the pass read


async def admission_pass(
    session: AsyncSession,
    relay: OutboxRelay,
    policy: Policy,
    now: datetime,
    registered: Sequence[Pool] = (),
) -> PassOutcome:
    """`admit`, saying whether the lock was free.

    Admitters serialise on an advisory lock (creates admitting their own task take it too), so per-org
    counts cannot be overrun by two of them at once; the rows are also locked SKIP LOCKED so a claim or
    cancel in flight is simply left for the next pass. Two statements: the read (lock, candidates, their
    orgs' slots) and the write (tasks, details and dispatches), whose outbox rows are published after the
    commit."""
    read = await repository.pass_read(session, now, policy.scan)
    if not read.held:
        return PassOutcome([], busy=True)
    candidates = read.candidates
    if not candidates:
        return PassOutcome([], busy=False)
    active = {c.org_id: c.active for c in candidates}
    last_served = {c.org_id: c.last_served for c in candidates if c.last_served is not None}
    if not read.fresh:  # an admission committed after the read's snapshot: count the slots again
        active, last_served = await repository.org_admission_state(session, sorted(active))
    admitted: list[tuple[str, str, str]] = []
    waiting: list[tuple[str, str]] = []
    # the msg id of an attempt's dispatch is stable, so an outbox replay after a crash is a duplicate
    # JetStream drops
    dispatches: list[tuple[str, bytes, str]] = []
    for task in fair_order(candidates, last_served):
        pool = policy.route(list(task.worker_tags), task.org_id, registered)
        if pool is None:
            detail = f"no worker pool has all of the tags {', '.join(sorted(task.worker_tags))}"
        elif active.get(task.org_id, 0) >= policy.limit_for(task.plan):
            detail = f"waiting: the organization runs {policy.limit_for(task.plan)} task(s) at once (its plan's limit)"
        elif len(admitted) >= policy.batch:
            break
        else:
            state.check_transition(task.status, "assigned")
            admitted.append((task.id, pool, f"dispatched to pool {pool}"))
            dispatches.append(
                (
                    subjects.task_run(pool, task.priority),
                    _dispatch(task).model_dump_json().encode(),
                    subjects.dispatch_msg_id(task.id, task.attempt),
                )
            )
            active[task.org_id] = active.get(task.org_id, 0) + 1
            continue
        if task.status_detail != detail:
            waiting.append((task.id, detail))
    if admitted or waiting:
        sent = await repository.pass_write(session, now, admitted, waiting, dispatches)
        if sent:

            async def publish() -> None:
                await relay.committed(sent)

            after_commit(session, publish)
    return PassOutcome([a[0] for a in admitted], busy=False, seen=len(candidates))


def _dispatch(task: repository.Candidate) -> TaskDispatch:
    """The TASKS message of the task's current attempt."""
    return TaskDispatch(
        task_id=task.id,
        org_id=task.org_id,
        attempt=task.attempt,
        priority=task.priority,
        timeout_seconds=task.timeout_seconds,
        spec=TaskSpec.model_validate(task.spec),
    )
