"""The task lifecycle: create, read, claim, record outcomes. No framework here; callers own the transaction."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor, Page
from browserfleet_contracts.events import EventEnvelope, TaskEventData
from browserfleet_contracts.task_admin import (
    AdminListTasksRequest,
    CancelTaskRequest,
    GetTaskAttemptsRequest,
    ListTaskLogsRequest,
    TaskAttemptPublic,
    TaskLogPage,
    TaskLogPublic,
)
from browserfleet_contracts.tasks import (
    TERMINAL_STATUSES,
    ClaimInfo,
    ClaimInfoRequest,
    ClaimReply,
    ClaimRequest,
    CreateTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    TaskCreate,
    TaskDispatch,
    TaskPublic,
    TaskSpec,
    TaskUpdateMessage,
    artifact_attempt,
    artifact_object_name,
)
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.db import jsonable, new_id, utcnow
from browserfleet_core.errors import Conflict, Forbidden, Invalid, NotFound
from browserfleet_core.messaging import RpcClient
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.workerkeys import WorkerKeys, rpc_lookup
from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from . import repository, state
from .models import Task, TaskAttempt

log = logging.getLogger(__name__)


# --- helpers -----------------------------------------------------------------------------------
def _valid_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# the columns a TaskPublic is made of (the attribute names of Task)
_PUBLIC_COLUMNS = (
    "id", "org_id", "title", "kind", "status", "status_detail", "priority", "worker_tags", "timeout_seconds",
    "max_attempts", "attempt", "worker_id", "result", "error_message", "error_step", "artifacts",
    "webhook_url", "task_metadata", "created_by", "created_at", "updated_at", "started_at", "completed_at",
    "execution_time_seconds",
)  # fmt: skip


def to_public(task: Task) -> TaskPublic:
    return _public(
        {name: getattr(task, name) for name in _PUBLIC_COLUMNS}, TaskSpec.model_validate(task.spec)
    )


def _public(row: Mapping[str, Any], spec: TaskSpec) -> TaskPublic:
    """A task's public view from its column values; a new task's values lack what only running sets."""
    return TaskPublic(
        id=row["id"],
        org_id=row["org_id"],
        title=row["title"],
        kind=row["kind"],
        status=row["status"],
        status_detail=row["status_detail"],
        priority=row["priority"],
        worker_tags=list(row["worker_tags"]),
        spec=spec,
        timeout_seconds=row["timeout_seconds"],
        max_attempts=row["max_attempts"],
        attempt=row["attempt"],
        worker_id=row.get("worker_id"),
        result=row.get("result"),
        error_message=row.get("error_message"),
        error_step=row.get("error_step"),
        artifacts=row.get("artifacts") or [],
        webhook_url=row["webhook_url"],
        metadata=dict(row["task_metadata"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row.get("started_at"),
        completed_at=row.get("completed_at"),
        execution_time_seconds=row.get("execution_time_seconds"),
    )


def to_dispatch(task: Task) -> TaskDispatch:
    return TaskDispatch(
        task_id=task.id,
        org_id=task.org_id,
        attempt=task.attempt,
        priority=task.priority,
        timeout_seconds=task.timeout_seconds,
        spec=TaskSpec.model_validate(task.spec),
    )


def encode_cursor(created_at: datetime, task_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), task_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, task_id = json.loads(raw)
        at = datetime.fromisoformat(created)
        if not isinstance(task_id, str) or at.tzinfo is None:
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise Invalid("cursor: not a cursor this API returned", field="cursor") from exc
    return at, task_id


async def _emit(relay: OutboxRelay, session: AsyncSession, task: Task, event: str, msg_id: str) -> None:
    """Enqueue a task.* domain event; `msg_id` is stable so a re-publication is dropped by JetStream."""
    await relay.enqueue(session, *_event_message(task, event, msg_id))


def _event_message(task: Task, event: str, msg_id: str) -> tuple[str, EventEnvelope, str]:
    data = TaskEventData(
        task_id=task.id,
        status=task.status,
        worker_id=task.worker_id,
        result=task.result,
        error_message=task.error_message,
        execution_time=task.execution_time_seconds,
        attempt=task.attempt,
    )
    return _envelope(task.org_id, event, msg_id, data)


def _envelope(org_id: str, event: str, msg_id: str, data: TaskEventData) -> tuple[str, EventEnvelope, str]:
    """(subject, envelope, msg id) of a task.* event."""
    envelope = EventEnvelope(
        id=msg_id,
        type=f"task.{event}",
        org_id=org_id,
        occurred_at=utcnow(),
        data=data.model_dump(mode="json"),
    )
    return subjects.event(org_id, f"task.{event}"), envelope, msg_id


async def _emit_event(
    relay: OutboxRelay, session: AsyncSession, *, org_id: str, event: str, msg_id: str, data: TaskEventData
) -> None:
    await relay.enqueue(session, *_envelope(org_id, event, msg_id, data))


async def _dispatch(relay: OutboxRelay, session: AsyncSession, task: Task, pool: str) -> None:
    """The TASKS message of the current attempt; msg id `<task_id>:<attempt>` makes a re-publication
    (outbox replay after a crash) a duplicate JetStream drops."""
    subject = subjects.task_run(pool, task.priority)
    await relay.enqueue(session, subject, to_dispatch(task), f"{task.id}:{task.attempt}")


def _move(task: Task, target: str, now: datetime) -> None:
    """Every status change goes through the state machine."""
    state.check_transition(task.status, target)
    task.status = target
    task.updated_at = now


def build_task_values(
    actor: Actor, body: TaskCreate, idempotency_key: str | None, now: datetime, spec: TaskSpec | None = None
) -> dict[str, Any]:
    """The row of a new `queued` task (also used by cron schedules); `spec`: `body.spec()` if already made."""
    spec = spec or body.spec()
    return {
        "id": new_id(),
        "org_id": actor.org_id,
        "title": body.title,
        "kind": spec.kind,
        "status": "queued",
        "status_detail": "waiting for admission",
        "plan": actor.plan,
        "priority": body.priority,
        "worker_tags": list(body.worker_tags),
        "spec": spec.model_dump(mode="json"),
        "secret_names": sorted(spec.secret_names()),
        "timeout_seconds": body.timeout_seconds,
        "max_attempts": body.max_attempts,
        "attempt": 1,
        "webhook_url": str(body.webhook_url) if body.webhook_url is not None else None,
        "task_metadata": dict(body.metadata),
        "created_by": actor.user_id or actor.api_key_id,
        "idempotency_key": idempotency_key,
        "created_at": now,
        "updated_at": now,
    }


# --- commands and queries ----------------------------------------------------------------------
async def create_task(session: AsyncSession, relay: OutboxRelay, req: CreateTaskRequest) -> TaskPublic:
    actor = req.actor
    if actor.role == "viewer":
        raise Forbidden("viewers cannot create tasks", code="insufficient_role")
    if req.idempotency_key is not None:
        existing = await repository.get_task_by_idempotency_key(session, actor.org_id, req.idempotency_key)
        if existing is not None:
            return to_public(existing)

    spec = req.task.spec()
    values = build_task_values(actor, req.task, req.idempotency_key, utcnow(), spec)
    inserted = await repository.insert_task(session, values)
    if not inserted:
        # a concurrent request with the same key committed first
        assert req.idempotency_key is not None
        winner = await repository.get_task_by_idempotency_key(session, actor.org_id, req.idempotency_key)
        assert winner is not None
        return to_public(winner)

    task_id = values["id"]
    # no dispatch yet: TASKS is a work queue, so the task waits here until admission sends it
    created = TaskEventData(task_id=task_id, status="queued", attempt=1)
    await _emit_event(
        relay, session, org_id=actor.org_id, event="created", msg_id=f"{task_id}:created", data=created
    )
    # answered from the values inserted: building the SQLModel row was ~4 % of the scheduler's CPU per task
    return _public(values, spec)


async def get_task(session: AsyncSession, req: GetTaskRequest) -> TaskPublic:
    task = (
        await repository.get_task(session, req.task_id, org_id=req.actor.org_id)
        if _valid_uuid(req.task_id)
        else None
    )
    if task is None:
        raise NotFound("task not found", field="task_id")
    return to_public(task)


async def list_tasks(session: AsyncSession, req: ListTasksRequest) -> Page[TaskPublic]:
    after = decode_cursor(req.cursor) if req.cursor else None
    rows = await repository.list_tasks(
        session, req.actor.org_id, status=req.status, limit=req.limit + 1, after=after
    )
    page, more = rows[: req.limit], len(rows) > req.limit
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if more else None
    return Page[TaskPublic](items=[to_public(t) for t in page], next_cursor=next_cursor)


def _refuse(reason: str, identity: WorkerIdentity | None = None) -> ClaimReply:
    return ClaimReply(granted=False, reason=reason, worker_id=identity.worker_id if identity else None)


@dataclass(frozen=True)
class Policy:
    """Admission, retry and timeout knobs (from SchedulerSettings); plain values, easy to test."""

    pools: dict[str, frozenset[str]] = field(default_factory=lambda: {subjects.DEFAULT_POOL: frozenset()})
    plan_limits: dict[str, int] = field(default_factory=dict)
    default_concurrency: int = 10
    batch: int = 100
    scan: int = 1000
    retry_backoff_seconds: float = 2.0
    retry_backoff_cap_seconds: float = 300.0
    queue_timeout_seconds: float = 3600.0
    run_timeout_grace_seconds: float = 5.0

    def limit_for(self, plan: str | None) -> int:
        if plan is not None and plan in self.plan_limits:
            return self.plan_limits[plan]
        return self.default_concurrency

    def route(self, tags: list[str]) -> str | None:
        """The pool whose tags include all of `tags`; the one with the fewest extra tags wins, so a
        plain task does not take a GPU pool's slot while a plain pool exists."""
        need = set(tags)
        fits = [(len(have - need), name) for name, have in self.pools.items() if need <= have]
        return min(fits)[1] if fits else None


def _fair_order(candidates: list[Task], last_served: dict[str, datetime]) -> list[Task]:
    """Priority first; within one priority, orgs take turns (the k-th task of every org before the
    (k+1)-th of any), the org served longest ago first; FIFO within an org."""
    seen: dict[tuple[str, str], int] = {}
    keyed: list[tuple[int, int, datetime, datetime, str, Task]] = []
    never = datetime.min.replace(tzinfo=UTC)
    for t in candidates:  # already priority then FIFO ordered
        k = seen.get((t.priority, t.org_id), 0)
        seen[(t.priority, t.org_id)] = k + 1
        rank = repository.PRIORITY_RANK.get(t.priority, 9)
        keyed.append((rank, k, last_served.get(t.org_id, never), t.created_at, t.id, t))
    keyed.sort(key=lambda x: x[:5])
    return [x[5] for x in keyed]


async def admit(session: AsyncSession, relay: OutboxRelay, policy: Policy, now: datetime) -> list[str]:
    """One admission pass: dispatch what may run now. Returns the admitted task ids.

    Replicas serialise on an advisory lock (a pass that finds it taken does nothing), so per-org
    counts cannot be overrun by two replicas admitting at once; the rows are also locked SKIP LOCKED so
    a claim or cancel in flight is simply left for the next pass."""
    if not await repository.try_admission_lock(session):
        return []
    candidates = await repository.admission_candidates(session, now, policy.scan)
    if not candidates:
        return []
    orgs = sorted({t.org_id for t in candidates})
    active = await repository.active_counts(session, orgs)
    last_served = await repository.last_dispatched(session, orgs)
    admitted: list[str] = []
    changed: list[Task] = []
    # the TASKS messages of this pass go into the outbox in one INSERT (msg id `<task_id>:<attempt>`, as
    # `_dispatch` writes them)
    dispatches: list[tuple[str, BaseModel | bytes, str]] = []
    for task in _fair_order(candidates, last_served):
        pool = policy.route(list(task.worker_tags))
        if pool is None:
            detail = f"no worker pool has all of the tags {', '.join(sorted(task.worker_tags))}"
        elif active.get(task.org_id, 0) >= policy.limit_for(task.plan):
            detail = f"waiting: the organization runs {policy.limit_for(task.plan)} task(s) at once (its plan's limit)"
        elif len(admitted) >= policy.batch:
            break
        else:
            _move(task, "assigned", now)
            task.pool = pool
            task.dispatched_at = now
            task.status_detail = f"dispatched to pool {pool}"
            dispatches.append(
                (subjects.task_run(pool, task.priority), to_dispatch(task), f"{task.id}:{task.attempt}")
            )
            active[task.org_id] = active.get(task.org_id, 0) + 1
            admitted.append(task.id)
            changed.append(task)
            continue
        if task.status_detail != detail:
            task.status_detail = detail
            task.updated_at = now
            changed.append(task)
    await relay.enqueue_many(session, dispatches)
    if changed:
        await repository.save(session, *changed)
    return admitted


async def claim(
    session: AsyncSession,
    relay: OutboxRelay,
    req: ClaimRequest,
    identity: WorkerIdentity | None,
    policy: Policy | None = None,
    now: datetime | None = None,
) -> ClaimReply:
    """Grant one attempt of a task to one worker. The row lock makes concurrent claims take turns,
    so exactly one of them sees the task `assigned`.

    A claim for the current attempt by *another* worker while the task runs means JetStream redelivered
    the dispatch: the holder stopped extending its lease (died, hung, partitioned). That attempt is
    lost; the task goes back to `queued` as attempt + 1 after a backoff (or fails once max_attempts is
    spent), and this claimant is refused: the new attempt is dispatched fresh through admission."""
    policy = policy or Policy()
    now = now or utcnow()
    if identity is None:
        return _refuse("worker key not recognised")
    if not _valid_uuid(req.task_id):
        return _refuse("unknown task", identity)
    # the common case (a fresh dispatch claimed once) in one statement, without loading the task
    row = await repository.claim_assigned(
        session,
        req.task_id,
        req.attempt,
        worker_id=identity.worker_id,
        worker_org_id=identity.org_id,
        delivery=req.delivery,
        now=now,
    )
    if row is not None:
        dispatch = TaskDispatch(
            task_id=row.id,
            org_id=row.org_id,
            attempt=row.attempt,
            priority=row.priority,
            timeout_seconds=row.timeout_seconds,
            spec=TaskSpec.model_validate(row.spec),
        )
        await _emit_event(
            relay,
            session,
            org_id=row.org_id,
            event="started",
            msg_id=f"{row.id}:{row.attempt}:started",
            data=TaskEventData(
                task_id=row.id, status="running", worker_id=identity.worker_id, attempt=row.attempt
            ),
        )
        return ClaimReply(granted=True, worker_id=identity.worker_id, task=dispatch)
    # not `assigned` at this attempt (or not this worker's org): the locked path says why, and handles a
    # redelivery that means the holder lost its lease
    task = await repository.get_task(session, req.task_id, lock=True)
    if task is None:
        return _refuse("unknown task", identity)
    if identity.org_id is not None and identity.org_id != task.org_id:
        # an org's own workers never see another org's tasks; say no more than "unknown"
        return _refuse("unknown task", identity)
    if task.status in TERMINAL_STATUSES:
        return _refuse(f"task is {task.status}", identity)
    if req.attempt != task.attempt:
        return _refuse(f"stale attempt {req.attempt}: the current attempt is {task.attempt}", identity)
    if task.status == "running":
        held = await repository.get_attempt(session, task.id, task.attempt)
        holder_delivery = held.delivery if held is not None else None
        if req.delivery is not None and holder_delivery is not None and req.delivery > holder_delivery:
            # JetStream redelivers only once the holder's lease (ack_wait) ran out without an in-progress ack
            await _lose_attempt(
                session, relay, task, policy, now, f"worker {task.worker_id} stopped extending its lease"
            )
            return _refuse(
                f"attempt {req.attempt} was lost by its worker; it is retried as a new attempt", identity
            )
        if task.worker_id == identity.worker_id:
            # the worker lost our first reply and asked again
            return ClaimReply(granted=True, worker_id=identity.worker_id, task=to_dispatch(task))
        return _refuse("attempt already claimed by another worker", identity)
    if task.status != "assigned":
        return _refuse(f"task is {task.status}", identity)

    _move(task, "running", now)
    task.worker_id = identity.worker_id
    task.started_at = now
    task.status_detail = None
    await repository.save(session, task)
    await repository.add_attempt(
        session,
        TaskAttempt(
            task_id=task.id,
            attempt=task.attempt,
            worker_id=identity.worker_id,
            status="running",
            claimed_at=now,
            delivery=req.delivery,
        ),
    )
    await _emit(relay, session, task, "started", f"{task.id}:{task.attempt}:started")
    return ClaimReply(granted=True, worker_id=identity.worker_id, task=to_dispatch(task))


async def _finish_attempt(
    session: AsyncSession, task: Task, status: str, now: datetime, error: str | None
) -> None:
    await repository.finish_attempt(session, task.id, task.attempt, status, now, error)


async def _lose_attempt(
    session: AsyncSession,
    relay: OutboxRelay,
    task: Task,
    policy: Policy,
    now: datetime,
    why: str,
    *,
    attempt_status: str = "lost",
) -> None:
    """The current attempt ended without a verdict on the task (its worker vanished, or its browser
    crashed): retry as attempt + 1 after a backoff, or fail the task once max_attempts is spent."""
    lost = task.attempt
    await _finish_attempt(session, task, attempt_status, now, why)
    if lost >= task.max_attempts:
        _move(task, "failed", now)
        task.error_message = (
            f"attempt {lost} {attempt_status} ({why}); no attempts left (max_attempts={task.max_attempts})"
        )
        task.status_detail = task.error_message
        task.completed_at = now
        await repository.save(session, task)
        await _emit(relay, session, task, "failed", f"{task.id}:{lost}:failed")
        return
    delay = state.retry_backoff(lost, base=policy.retry_backoff_seconds, cap=policy.retry_backoff_cap_seconds)
    _move(task, "queued", now)
    task.attempt = lost + 1
    task.worker_id = None
    task.started_at = None
    task.pool = None
    task.not_before = now + timedelta(seconds=delay)
    task.status_detail = f"attempt {lost} {attempt_status} ({why}); attempt {lost + 1} after {delay:g} s"
    await repository.save(session, task)
    log.warning("task %s: %s", task.id, task.status_detail)


async def claim_info(session: AsyncSession, req: ClaimInfoRequest) -> ClaimInfo:
    task = await repository.get_task(session, req.task_id) if _valid_uuid(req.task_id) else None
    if task is None:
        raise NotFound("task not found", field="task_id")
    return ClaimInfo(
        task_id=task.id,
        org_id=task.org_id,
        status=task.status,
        attempt=task.attempt,
        worker_id=task.worker_id,
        secret_names=list(task.secret_names),
    )


async def _store_logs(session: AsyncSession, task: Task, msg: TaskUpdateMessage, now: datetime) -> int:
    if not msg.logs or msg.attempt > task.attempt or msg.attempt < 1:
        return 0
    base: int | None = None
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(msg.logs):
        seq = line.seq
        if seq is None:
            # unnumbered lines (a worker that does not number them) go after what is stored
            if base is None:
                top = await repository.max_log_seq(session, task.id, msg.attempt)
                base = 0 if top is None else top + 1
            seq = base + i
        rows.append(
            {
                "task_id": task.id,
                "attempt": msg.attempt,
                "seq": seq,
                "level": line.level,
                "message": line.message[:10_000],
                "log_metadata": jsonable(
                    dict(line.metadata, **({"step": line.step} if line.step is not None else {}))
                ),
                "at": line.at or now,
            }
        )
    return await repository.insert_logs(session, rows)


async def apply_updates(
    session: AsyncSession,
    relay: OutboxRelay,
    msgs: list[TaskUpdateMessage],
    policy: Policy | None = None,
    now: datetime | None = None,
) -> bool:
    """Record a batch of worker updates in one transaction, in arrival order. Returns whether any task
    changed. The batch's tasks are locked up front in id order, so two replicas' batches cannot deadlock
    on each other (every other writer locks one task, or skips locked ones)."""
    now = now or utcnow()
    wanted = sorted({m.task_id for m in msgs if m.kind != "started" and _valid_uuid(m.task_id)})
    tasks = {t.id: t for t in await repository.lock_tasks(session, wanted)} if wanted else {}
    # the outcomes' writes go out together at the end (one UPDATE batch per table, one outbox INSERT):
    # a batch that made three round trips per result took so long, sharing the event loop with every
    # claim and create, that results queued up behind them under load
    finished = _FinishedBatch()
    changed = False
    for msg in msgs:
        changed |= await apply_update(session, relay, msg, now, policy, tasks=tasks, finished=finished)
    await finished.write(session, relay)
    return changed


@dataclass
class _FinishedBatch:
    """Outcomes recorded in memory by `apply_update` during `apply_updates`, written in bulk at the end.
    Later updates of the same batch see the task as changed: they read the same (locked) row object."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, BaseModel | bytes, str]] = field(default_factory=list)

    async def write(self, session: AsyncSession, relay: OutboxRelay) -> None:
        await session.flush()  # the changed task rows, as one executemany
        await repository.finish_attempts(session, self.attempts)
        await relay.enqueue_many(session, self.events)


async def apply_update(
    session: AsyncSession,
    relay: OutboxRelay,
    msg: TaskUpdateMessage,
    now: datetime | None = None,
    policy: Policy | None = None,
    *,
    tasks: dict[str, Task] | None = None,
    finished: _FinishedBatch | None = None,
) -> bool:
    """Record what a worker reported. Returns whether the task changed: a redelivered, stale or foreign
    update changes nothing and is acknowledged. A failure the worker marks `retryable` (its browser
    crashed under the task) is retried as a new attempt while attempts remain. `tasks`: rows this
    transaction already locked (`apply_updates`)."""
    now = now or utcnow()
    if msg.kind == "started":
        return False  # the claim already moved the task to running
    if tasks is not None:
        task = tasks.get(msg.task_id)
    else:
        task = (
            await repository.get_task(session, msg.task_id, lock=True) if _valid_uuid(msg.task_id) else None
        )
    if task is None:
        log.warning("update for unknown task %s; ignored", msg.task_id)
        return False
    if (msg.kind == "log" or msg.logs) and (
        msg.worker_id == task.worker_id
        or await _attempt_worker(session, task.id, msg.attempt) == msg.worker_id
    ):
        await _store_logs(session, task, msg, now)
    if msg.kind == "log":
        return False
    if msg.status not in ("completed", "failed"):
        log.warning("result update for task %s without a completed/failed status; ignored", msg.task_id)
        return False
    if task.status != "running" or msg.attempt != task.attempt or msg.worker_id != task.worker_id:
        log.info(
            "result for task %s attempt %d from %s ignored (task %s, attempt %d, worker %s)",
            task.id, msg.attempt, msg.worker_id, task.status, task.attempt, task.worker_id,
        )  # fmt: skip
        return False
    # kept on either path: a crashed attempt's failure screenshot and trace are what explain the crash
    task.artifacts = _with_attempt_artifacts(task, msg)
    if msg.status == "failed" and msg.retryable and task.attempt < task.max_attempts:
        why = f"the worker's browser failed: {msg.error_message or 'no detail'}"[:1000]
        await _lose_attempt(session, relay, task, policy or Policy(), now, why, attempt_status="failed")
        return True

    _move(task, msg.status, now)
    task.result = jsonable(msg.result) if msg.result is not None else None
    task.error_message = msg.error_message
    task.error_step = msg.error_step
    task.status_detail = None
    task.completed_at = now
    task.execution_time_seconds = (
        msg.execution_time_seconds
        if msg.execution_time_seconds is not None
        else ((now - task.started_at).total_seconds() if task.started_at else None)
    )
    msg_id = f"{task.id}:{task.attempt}:{msg.status}"
    if finished is not None:
        session.add(task)
        finished.attempts.append(
            repository.attempt_close(task.id, task.attempt, msg.status, now, msg.error_message)
        )
        finished.events.append(_event_message(task, msg.status, msg_id))
        return True
    await repository.save(session, task)
    await _finish_attempt(session, task, msg.status, now, msg.error_message)
    await _emit(relay, session, task, msg.status, msg_id)
    return True


def _artifact_attempt(ref: Mapping[str, Any]) -> int:
    """The attempt that stored an artifact (0 for a ref not named by attempt)."""
    return artifact_attempt(str(ref.get("object_name", ""))) or 0


def _with_attempt_artifacts(task: Task, msg: TaskUpdateMessage) -> list[dict[str, Any]]:
    """The task's artifacts with those of `msg.attempt` replaced by the update's, every other attempt's
    kept; sorted by attempt, in stored order within one. Replacing rather than appending keeps a
    redelivered update from listing an artifact twice. A ref naming an object outside this attempt's
    `<task_id>/<attempt>/` is dropped: the gateway serves whatever object a ref names, and files it under
    the attempt that name carries."""
    prefix = artifact_object_name(task.id, msg.attempt, "")
    reported: list[dict[str, Any]] = []
    for ref in msg.artifacts:
        if ref.object_name.startswith(prefix):
            reported.append(ref.model_dump(mode="json"))
        else:
            log.warning(
                "task %s attempt %d: artifact %r names object %r, not one under %s; not recorded",
                task.id, msg.attempt, ref.name, ref.object_name, prefix,
            )  # fmt: skip
    kept = [dict(ref) for ref in task.artifacts if _artifact_attempt(ref) != msg.attempt]
    return sorted([*kept, *reported], key=_artifact_attempt)  # stable: stored order within an attempt


async def _attempt_worker(session: AsyncSession, task_id: str, attempt: int) -> str | None:
    row = await repository.get_attempt(session, task_id, attempt)
    return row.worker_id if row is not None else None


# --- cancellation and timeouts ---------------------------------------------------------------------
async def cancel_task(
    session: AsyncSession, relay: OutboxRelay, req: CancelTaskRequest, now: datetime | None = None
) -> tuple[TaskPublic, bool]:
    """Cancel at once in the database. Returns the task and whether a worker runs it (the caller then
    signals `tasks.cancel.<id>` after commit; the worker's late result is ignored: the task is terminal)."""
    now = now or utcnow()
    if req.actor.role == "viewer":
        raise Forbidden("viewers cannot cancel tasks", code="insufficient_role")
    task = (
        await repository.get_task(session, req.task_id, org_id=req.actor.org_id, lock=True)
        if _valid_uuid(req.task_id)
        else None
    )
    if task is None:
        raise NotFound("task not found", field="task_id")
    if task.status not in state.CANCELLABLE:
        raise Conflict(f"task is already {task.status}", code="task_finished", field="task_id")
    was_running = task.status == "running"
    who = req.actor.user_id or req.actor.api_key_id or "a user"
    reason = f"cancelled by {who}" + (f": {req.reason}" if req.reason else "")
    _move(task, "cancelled", now)
    task.error_message = reason
    task.status_detail = reason
    task.completed_at = now
    await repository.save(session, task)
    await _finish_attempt(session, task, "cancelled", now, reason)
    await _emit(relay, session, task, "cancelled", f"{task.id}:cancelled")
    return to_public(task), was_running


async def reap(session: AsyncSession, relay: OutboxRelay, policy: Policy, now: datetime) -> list[str]:
    """Time out what overran. Returns the ids of tasks a worker may still be running (to signal)."""
    signal: list[str] = []
    for task in await repository.overdue_running(session, now, policy.run_timeout_grace_seconds, policy.scan):
        why = f"ran longer than its timeout of {task.timeout_seconds} s"
        _move(task, "timed_out", now)
        task.error_message = task.status_detail = why
        task.completed_at = now
        if task.started_at is not None:
            task.execution_time_seconds = (now - task.started_at).total_seconds()
        await repository.save(session, task)
        await _finish_attempt(session, task, "timed_out", now, why)
        await _emit(relay, session, task, "timed_out", f"{task.id}:timed_out")
        signal.append(task.id)
    for task in await repository.overdue_waiting(session, now, policy.queue_timeout_seconds, policy.scan):
        why = f"not started within the queue timeout of {policy.queue_timeout_seconds:g} s" + (
            f" ({task.status_detail})" if task.status_detail else ""
        )
        _move(task, "timed_out", now)
        task.error_message = task.status_detail = why
        task.completed_at = now
        await repository.save(session, task)
        await _emit(relay, session, task, "timed_out", f"{task.id}:timed_out")
    return signal


# --- admin queries ---------------------------------------------------------------------------------
async def admin_list_tasks(session: AsyncSession, req: AdminListTasksRequest) -> Page[TaskPublic]:
    if req.created_after and req.created_before and req.created_after >= req.created_before:
        raise Invalid("created_after must be before created_before", field="created_after")
    after = decode_cursor(req.cursor) if req.cursor else None
    rows = await repository.admin_list_tasks(
        session,
        req.actor.org_id,
        status=req.status,
        priority=req.priority,
        worker_id=req.worker_id,
        tag=req.tag,
        created_after=req.created_after,
        created_before=req.created_before,
        limit=req.limit + 1,
        after=after,
    )
    page, more = rows[: req.limit], len(rows) > req.limit
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if more else None
    return Page[TaskPublic](items=[to_public(t) for t in page], next_cursor=next_cursor)


async def _own_task(session: AsyncSession, org_id: str, task_id: str) -> Task:
    task = await repository.get_task(session, task_id, org_id=org_id) if _valid_uuid(task_id) else None
    if task is None:
        raise NotFound("task not found", field="task_id")
    return task


async def task_attempts(session: AsyncSession, req: GetTaskAttemptsRequest) -> list[TaskAttemptPublic]:
    task = await _own_task(session, req.actor.org_id, req.task_id)
    return [
        TaskAttemptPublic(
            attempt=a.attempt,
            worker_id=a.worker_id,
            status=a.status,
            started_at=a.claimed_at,
            finished_at=a.finished_at,
            error=a.error,
        )
        for a in await repository.list_attempts(session, task.id)
    ]


async def task_logs(session: AsyncSession, req: ListTaskLogsRequest) -> TaskLogPage:
    task = await _own_task(session, req.actor.org_id, req.task_id)
    rows = await repository.list_logs(session, task.id, req.since, req.limit)
    items = [
        TaskLogPublic(
            id=int(r.id or 0),
            attempt=r.attempt,
            level=r.level,
            message=r.message,
            metadata=dict(r.log_metadata),
            at=r.at,
        )
        for r in rows
    ]
    return TaskLogPage(
        items=items,
        next_since=items[-1].id if items else req.since,
        finished=task.status in TERMINAL_STATUSES and len(items) < req.limit,
    )


# --- worker authentication ---------------------------------------------------------------------
class WorkerAuthenticator(Protocol):
    async def authenticate(self, worker_key: str) -> WorkerIdentity | None:
        """The worker a key belongs to, or None when the key is unknown, revoked or expired."""
        ...


class RpcWorkerAuthenticator:
    """Asks worker-gateway (`svc.workers.authenticate`) and trusts a positive answer for `ttl` seconds,
    so a worker's claims do not each cost a round trip (browserfleet_core.workerkeys). An unavailable
    worker-gateway raises (the claim fails, the worker retries) rather than refusing the claim for good."""

    def __init__(
        self,
        rpc: RpcClient,
        *,
        ttl: float = 30.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = WorkerKeys(
            rpc_lookup(lambda: rpc), ttl_seconds=ttl, max_entries=max_entries, clock=clock
        )

    async def authenticate(self, worker_key: str) -> WorkerIdentity | None:
        return await self._keys.identify(worker_key)
