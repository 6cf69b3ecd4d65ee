"""The task lifecycle: create, read, claim, record outcomes. No framework here; callers own the transaction."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Page
from browserfleet_contracts.events import EventEnvelope, TaskEventData
from browserfleet_contracts.tasks import (
    TERMINAL_STATUSES,
    ClaimInfo,
    ClaimInfoRequest,
    ClaimReply,
    ClaimRequest,
    CreateTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    TaskDispatch,
    TaskPublic,
    TaskSpec,
    TaskUpdateMessage,
)
from browserfleet_contracts.workers import WorkerAuthRequest, WorkerIdentity
from browserfleet_core.db import jsonable, new_id, utcnow
from browserfleet_core.errors import Forbidden, Invalid, NotFound, ServiceError, Unauthorized
from browserfleet_core.messaging import RpcClient
from browserfleet_core.outbox import OutboxRelay
from sqlmodel.ext.asyncio.session import AsyncSession

from . import repository
from .models import Task, TaskAttempt

log = logging.getLogger(__name__)


# --- helpers -----------------------------------------------------------------------------------
def _valid_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def to_public(task: Task) -> TaskPublic:
    return TaskPublic(
        id=task.id,
        org_id=task.org_id,
        title=task.title,
        kind=task.kind,
        status=task.status,
        status_detail=task.status_detail,
        priority=task.priority,
        worker_tags=list(task.worker_tags),
        spec=TaskSpec.model_validate(task.spec),
        timeout_seconds=task.timeout_seconds,
        max_attempts=task.max_attempts,
        attempt=task.attempt,
        worker_id=task.worker_id,
        result=task.result,
        error_message=task.error_message,
        error_step=task.error_step,
        artifacts=task.artifacts,
        webhook_url=task.webhook_url,
        metadata=dict(task.task_metadata),
        created_by=task.created_by,
        created_at=task.created_at,
        updated_at=task.updated_at,
        started_at=task.started_at,
        completed_at=task.completed_at,
        execution_time_seconds=task.execution_time_seconds,
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
    envelope = EventEnvelope(
        id=msg_id,
        type=f"task.{event}",
        org_id=task.org_id,
        occurred_at=utcnow(),
        data=TaskEventData(
            task_id=task.id,
            status=task.status,
            worker_id=task.worker_id,
            result=task.result,
            error_message=task.error_message,
            execution_time=task.execution_time_seconds,
            attempt=task.attempt,
        ).model_dump(mode="json"),
    )
    await relay.enqueue(session, subjects.event(task.org_id, f"task.{event}"), envelope, msg_id)


async def _dispatch(relay: OutboxRelay, session: AsyncSession, task: Task) -> None:
    # Routing by worker_tags to pools comes with admission; until then every task runs on the default pool.
    subject = subjects.task_run(subjects.DEFAULT_POOL, task.priority)
    await relay.enqueue(session, subject, to_dispatch(task), f"{task.id}:{task.attempt}")


# --- commands and queries ----------------------------------------------------------------------
async def create_task(session: AsyncSession, relay: OutboxRelay, req: CreateTaskRequest) -> TaskPublic:
    actor = req.actor
    if actor.role == "viewer":
        raise Forbidden("viewers cannot create tasks", code="insufficient_role")
    if req.idempotency_key is not None:
        existing = await repository.get_task_by_idempotency_key(session, actor.org_id, req.idempotency_key)
        if existing is not None:
            return to_public(existing)

    body = req.task
    spec = body.spec()
    now = utcnow()
    task_id = new_id()
    inserted = await repository.insert_task(
        session,
        {
            "id": task_id,
            "org_id": actor.org_id,
            "title": body.title,
            "kind": spec.kind,
            "status": "queued",
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
            "idempotency_key": req.idempotency_key,
            "created_at": now,
            "updated_at": now,
        },
    )
    if not inserted:
        # a concurrent request with the same key committed first
        assert req.idempotency_key is not None
        winner = await repository.get_task_by_idempotency_key(session, actor.org_id, req.idempotency_key)
        assert winner is not None
        return to_public(winner)

    task = await repository.get_task(session, task_id)
    assert task is not None
    await _dispatch(relay, session, task)
    await _emit(relay, session, task, "created", f"{task.id}:created")
    return to_public(task)


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


async def claim(
    session: AsyncSession, relay: OutboxRelay, req: ClaimRequest, identity: WorkerIdentity | None
) -> ClaimReply:
    """Grant one attempt of a task to one worker. The row lock makes concurrent claims take turns,
    so exactly one of them sees the task `queued`."""
    if identity is None:
        return _refuse("worker key not recognised")
    task = await repository.get_task(session, req.task_id, lock=True) if _valid_uuid(req.task_id) else None
    if task is None:
        return _refuse("unknown task", identity)
    if identity.org_id is not None and identity.org_id != task.org_id:
        # an org's own workers never see another org's tasks; say no more than "unknown"
        return _refuse("unknown task", identity)
    if task.status in TERMINAL_STATUSES:
        return _refuse(f"task is {task.status}", identity)
    if req.attempt != task.attempt:
        return _refuse(f"stale attempt {req.attempt}: the current attempt is {task.attempt}", identity)
    if task.status in ("assigned", "running"):
        if task.worker_id == identity.worker_id:
            # the worker lost our first reply and asked again
            return ClaimReply(granted=True, worker_id=identity.worker_id, task=to_dispatch(task))
        return _refuse("attempt already claimed by another worker", identity)
    if task.status != "queued":
        return _refuse(f"task is {task.status}", identity)

    now = utcnow()
    task.status = "running"
    task.worker_id = identity.worker_id
    task.started_at = now
    task.updated_at = now
    await repository.save(session, task)
    await repository.add_attempt(
        session,
        TaskAttempt(
            task_id=task.id,
            attempt=task.attempt,
            worker_id=identity.worker_id,
            status="running",
            claimed_at=now,
        ),
    )
    await _emit(relay, session, task, "started", f"{task.id}:{task.attempt}:started")
    return ClaimReply(granted=True, worker_id=identity.worker_id, task=to_dispatch(task))


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


async def apply_update(session: AsyncSession, relay: OutboxRelay, msg: TaskUpdateMessage) -> bool:
    """Record what a worker reported. Returns whether anything changed: a redelivered, stale or
    foreign update changes nothing and is acknowledged."""
    if msg.kind == "log":
        return False  # task logs are not stored yet
    if msg.kind == "started":
        return False  # the claim already moved the task to running
    if msg.status not in ("completed", "failed"):
        log.warning("result update for task %s without a completed/failed status; ignored", msg.task_id)
        return False
    task = await repository.get_task(session, msg.task_id, lock=True) if _valid_uuid(msg.task_id) else None
    if task is None:
        log.warning("result for unknown task %s; ignored", msg.task_id)
        return False
    if task.status in TERMINAL_STATUSES or msg.attempt != task.attempt or msg.worker_id != task.worker_id:
        log.info(
            "result for task %s attempt %d from %s ignored (task %s, attempt %d, worker %s)",
            task.id, msg.attempt, msg.worker_id, task.status, task.attempt, task.worker_id,
        )  # fmt: skip
        return False

    now = utcnow()
    task.status = msg.status
    task.result = jsonable(msg.result) if msg.result is not None else None
    task.error_message = msg.error_message
    task.error_step = msg.error_step
    task.artifacts = [a.model_dump(mode="json") for a in msg.artifacts]
    task.completed_at = now
    task.updated_at = now
    task.execution_time_seconds = (
        msg.execution_time_seconds
        if msg.execution_time_seconds is not None
        else ((now - task.started_at).total_seconds() if task.started_at else None)
    )
    rows: list[Task | TaskAttempt] = [task]
    attempt = await repository.get_attempt(session, task.id, task.attempt)
    if attempt is not None:
        attempt.status = msg.status
        attempt.finished_at = now
        attempt.error = msg.error_message
        rows.append(attempt)
    await repository.save(session, *rows)
    await _emit(relay, session, task, msg.status, f"{task.id}:{task.attempt}:{msg.status}")
    return True


# --- worker authentication ---------------------------------------------------------------------
class WorkerAuthenticator(Protocol):
    async def authenticate(self, worker_key: str) -> WorkerIdentity | None:
        """The worker a key belongs to, or None when the key is unknown, revoked or expired."""
        ...


class RpcWorkerAuthenticator:
    """Asks worker-gateway (`svc.workers.authenticate`) and trusts a positive answer for `ttl` seconds,
    so a worker's claims do not each cost a round trip. Only successes are cached: a key registered a
    moment ago must work at once. An unavailable worker-gateway raises (the claim fails, the worker
    retries) rather than refusing the claim for good."""

    def __init__(
        self,
        rpc: RpcClient,
        *,
        ttl: float = 30.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpc = rpc
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._cache: dict[str, tuple[float, WorkerIdentity]] = {}

    async def authenticate(self, worker_key: str) -> WorkerIdentity | None:
        # keyed by digest so the process does not hold raw worker keys
        digest = hashlib.sha256(worker_key.encode()).hexdigest()
        now = self.clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            identity: WorkerIdentity = await self.rpc.call(
                subjects.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=worker_key), WorkerIdentity
            )
        except ServiceError as exc:
            # RpcClient re-raises the callee's error as a plain ServiceError: judge it by status
            if exc.status in (Unauthorized.status, Forbidden.status):
                self._cache.pop(digest, None)
                return None
            raise
        if self.ttl > 0:
            if len(self._cache) >= self.max_entries:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
            self._cache[digest] = (now + self.ttl, identity)
        return identity
