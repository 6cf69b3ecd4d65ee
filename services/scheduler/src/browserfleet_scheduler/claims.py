"""Claims: a worker asks for the attempt it pulled from TASKS (`claim`), and the vault asks who holds a
task before releasing its secrets (`claim_info`). A claim that reveals a lost lease retries the task."""

from __future__ import annotations

from datetime import datetime

from browserfleet_contracts.events import EventType, TaskEventData
from browserfleet_contracts.tasks import ClaimInfo, ClaimInfoRequest, ClaimReply, ClaimRequest
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.db import AsyncSession, Database, utcnow
from browserfleet_core.errors import NotFound
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.projection import project

from . import attempts, events, repository, state
from .models import TaskAttempt
from .policy import Policy
from .queries import find_task, is_uuid
from .views import to_dispatch
from .workerauth import known_worker


def _refuse(reason: str, identity: WorkerIdentity | None = None) -> ClaimReply:
    return ClaimReply(granted=False, reason=reason, worker_id=identity.worker_id if identity else None)


def _claim_of(req: ClaimRequest, identity: WorkerIdentity, now: datetime) -> repository.Claim:
    return repository.Claim(
        task_id=req.task_id,
        attempt=req.attempt,
        worker_id=identity.worker_id,
        worker_org_id=identity.org_id,
        delivery=req.delivery,
        now=now,
    )


async def claim_now(
    db: Database,
    relay: OutboxRelay,
    req: ClaimRequest,
    identity: WorkerIdentity | None,
    policy: Policy | None = None,
) -> ClaimReply:
    """`claim` as a worker's hot path: the common case (a fresh dispatch claimed once) is the task's move to
    `running`, its attempt row and its `task.started` outbox row in one statement on an autocommit
    connection, shared by the claims that arrive together (`repository.claim_writer`: group commit, no ORM
    session). Anything else (a redelivery, a stale or foreign attempt, a lost lease) takes `claim` in a
    transaction, unchanged."""
    if identity is None or not is_uuid(req.task_id):
        return await db.run(claim, relay, req, identity, policy)  # its refusal or its error, as ever
    now = utcnow()
    event = events.started_template(req.task_id, identity.worker_id, req.attempt, now)
    row = await repository.claim_writer(db).submit((_claim_of(req, identity, now), event))
    if row is None:
        return await db.run(claim, relay, req, identity, policy)
    if row.outbox_id is not None:
        await relay.committed([(row.outbox_id, row.outbox_subject, bytes(row.outbox_payload), event[2])])
    return ClaimReply(granted=True, worker_id=identity.worker_id, task=to_dispatch(row))


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
    # an error, not a refusal: a refused worker drops (terms) its message, and the task, still claimable
    # by every other worker of the pool, would wait out the queue timeout. On an error it hands it back.
    identity = known_worker(identity)
    if not is_uuid(req.task_id):
        return _refuse("unknown task", identity)
    # the common case (a fresh dispatch claimed once) in one statement, without loading the task
    row = await repository.claim_assigned(session, _claim_of(req, identity, now))
    if row is not None:
        started = TaskEventData(
            task_id=row.id, status="running", worker_id=identity.worker_id, attempt=row.attempt
        )
        event = events.message(
            row.org_id, EventType.TASK_STARTED, started, row.attempt, webhook_url=row.webhook_url
        )
        await relay.enqueue(session, *event)
        return ClaimReply(granted=True, worker_id=identity.worker_id, task=to_dispatch(row))
    # not claimable at this attempt (or not this worker's org): the locked path says why, and handles a
    # redelivery that means the holder lost its lease
    task = await repository.get_task(session, req.task_id, lock=True)
    if task is None:
        return _refuse("unknown task", identity)
    if identity.org_id is not None and identity.org_id != task.org_id:
        # an org's own workers never see another org's tasks; say no more than "unknown"
        return _refuse("unknown task", identity)
    if state.is_terminal(task.status):
        return _refuse(f"task is {task.status}", identity)
    if req.attempt != task.attempt:
        return _refuse(f"stale attempt {req.attempt}: the current attempt is {task.attempt}", identity)
    if task.status == "running":
        held = await repository.get_attempt(session, task.id, task.attempt)
        holder_delivery = held.delivery if held is not None else None
        if req.delivery is not None and holder_delivery is not None and req.delivery > holder_delivery:
            # JetStream redelivers only once the holder's lease (ack_wait) ran out without an in-progress ack
            await attempts.lose(
                session, relay, task, policy, now, f"worker {task.worker_id} stopped extending its lease"
            )
            return _refuse(
                f"attempt {req.attempt} was lost by its worker; it is retried as a new attempt", identity
            )
        if task.worker_id == identity.worker_id:
            # the worker lost our first reply and asked again
            return ClaimReply(granted=True, worker_id=identity.worker_id, task=to_dispatch(task))
        return _refuse("attempt already claimed by another worker", identity)
    if not state.can_transition(task.status, "running"):
        return _refuse(f"task is {task.status}", identity)

    state.move(task, "running", now)
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
    await events.emit(relay, session, task, EventType.TASK_STARTED, attempt=task.attempt)
    return ClaimReply(granted=True, worker_id=identity.worker_id, task=to_dispatch(task))


async def claim_info(session: AsyncSession, req: ClaimInfoRequest) -> ClaimInfo:
    task = await find_task(session, req.task_id)
    if task is None:
        raise NotFound("task not found", field="task_id")
    return project(ClaimInfo, task, task_id=task.id, secret_names=list(task.secret_names))
