"""Creating a task: the row of a new `queued` task, `create_task` with its idempotency key, and
`create_task_now`, the API's hot path, which also admits the new task in its one statement when it may start
now. Otherwise the task waits in Postgres (TASKS is a work queue) until admission (`admission.admit`) sends it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.events import EventType, TaskEventData
from browserfleet_contracts.tasks import CreateTaskRequest, TaskCreate, TaskDispatch, TaskPublic, TaskSpec
from browserfleet_core.db import AsyncSession, Database, new_id, utcnow
from browserfleet_core.errors import Conflict, Forbidden
from browserfleet_core.outbox import OutboxRelay

from . import events, repository
from .models import Task
from .policy import Policy, Pool
from .repository.driver import GroupCommit
from .views import public_from_values, to_public


def build_task_values(
    actor: Actor,
    body: TaskCreate,
    idempotency_key: str | None,
    now: datetime,
    spec: TaskSpec | None = None,
    body_hash: str | None = None,
) -> dict[str, Any]:
    """The row of a new `queued` task (also used by cron schedules); `spec`: `body.spec()` if already made;
    `body_hash`: what the idempotency key is held to (`TaskCreate.fingerprint()`)."""
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
        "idempotency_hash": body_hash if idempotency_key is not None else None,
        "created_at": now,
        "updated_at": now,
    }


async def create_task(session: AsyncSession, relay: OutboxRelay, req: CreateTaskRequest) -> TaskPublic:
    actor = req.actor
    if actor.role == "viewer":
        raise Forbidden("viewers cannot create tasks", code="insufficient_role")
    body_hash = None
    if req.idempotency_key is not None:
        body_hash = req.body_hash or req.task.fingerprint()
        existing = await repository.get_task_by_idempotency_key(session, actor.org_id, req.idempotency_key)
        if existing is not None:
            return _replayed(existing, req.idempotency_key, body_hash)

    spec = req.task.spec()
    values = build_task_values(actor, req.task, req.idempotency_key, utcnow(), spec, body_hash)
    inserted = await repository.insert_task(session, values)
    if not inserted:
        # a concurrent request with the same key committed first
        assert req.idempotency_key is not None and body_hash is not None
        winner = await repository.get_task_by_idempotency_key(session, actor.org_id, req.idempotency_key)
        assert winner is not None
        return _replayed(winner, req.idempotency_key, body_hash)

    await relay.enqueue(session, *_created_event(actor.org_id, values))
    # answered from the values inserted: building the SQLModel row was ~4 % of the scheduler's CPU per task
    return public_from_values(values, spec)


async def create_task_now(
    db: Database,
    relay: OutboxRelay,
    req: CreateTaskRequest,
    policy: Policy | None = None,
    registered: Sequence[Pool] = (),
) -> TaskPublic:
    """`create_task` as the API's hot path: a request without an Idempotency-Key (nothing to look up, no
    conflict possible) writes the task and its `task.created` outbox row in one statement on an
    autocommit connection (`Database.statement()`): one round trip instead of four (BEGIN, two INSERTs,
    COMMIT), and no ORM session. Given the `policy` (and the `registered` pools), the same statement admits
    the task when it may start now (`repository.create_and_admit`, group-committed with the creates that
    overlap it: `AdmitGate`): it is answered `assigned`, its dispatch already in the outbox, and no admission
    pass has to run for it. The events are published right after, as after any commit. A request with a key
    takes `create_task` in a transaction, unchanged."""
    if req.idempotency_key is not None:
        return await db.run(create_task, relay, req)
    actor = req.actor
    if actor.role == "viewer":
        raise Forbidden("viewers cannot create tasks", code="insufficient_role")
    spec = req.task.spec()
    now = utcnow()
    values = build_task_values(actor, req.task, None, now, spec)
    subject, envelope, msg_id = _created_event(actor.org_id, values)
    payload = envelope.model_dump_json().encode()
    admittable = _admittable(values, spec, policy, registered) if policy is not None else None
    if admittable is None:
        async with db.statement() as conn:
            row_id = await repository.insert_task_with_event(conn, values, (subject, payload, msg_id, now))
        await relay.committed([(row_id, subject, payload, msg_id)])
        return public_from_values(values, spec)
    assigned_detail = f"dispatched to pool {admittable.pool}"
    created = await admit_gate(db).create(
        repository.CreateAdmit(
            _json_columns(values),
            (subject, payload, msg_id),
            admittable,
            (assigned_detail, values["status_detail"]),
            now,
        )
    )
    messages = {msg_id: (subject, payload), admittable.dispatch[2]: admittable.dispatch[:2]}
    # on the connection before the answer leaves, task.created first (`OutboxRelay.committed`)
    await relay.committed([(row_id, *messages[sent_id], sent_id) for row_id, sent_id in created.outbox])
    if created.admitted:
        values["status"] = "assigned"
        values["status_detail"] = assigned_detail
    return public_from_values(values, spec)


# The most creates one transaction of the group writes (`AdmitGate`).
ADMIT_BATCH = 64


class AdmitGate:
    """The admitters of one process take turns: its creates that may admit their own task, and its admission
    passes. A create's statement only tries the admission lock (`pg_try_advisory_xact_lock`), and its snapshot
    must see the last admission: a create that overlapped another admitter left its task queued, to wait for a
    wake, an admission pass (a transaction) and the pass's publish, and every create behind it too (a queued
    task ahead holds them back). So the creates are group-committed: those that arrive while a group or a
    pass is being written go together in the next group, one transaction whose statements run in order and
    see each other (`repository.create_and_admit_many`), with one round trip and one commit for all. One at
    a time, each create waited for the commit of every create before it, and past four waiting, creates went
    at once and left their tasks to the pass. Another replica's admitters are still only met by the lock."""

    def __init__(self, db: Database) -> None:
        self.lock = asyncio.Lock()
        self.writer: GroupCommit[repository.CreateAdmit, repository.Created] = GroupCommit(
            db, repository.create_and_admit_many, max_batch=ADMIT_BATCH, turns=self.lock
        )

    async def create(self, item: repository.CreateAdmit) -> repository.Created:
        return await self.writer.submit(item)

    @contextlib.asynccontextmanager
    async def admission_pass(self) -> AsyncIterator[None]:
        async with self.lock:
            yield


def admit_gate(db: Database) -> AdmitGate:
    """The one gate of this process's admitters on `db` (kept by `db`: the gate's writer holds it)."""
    return db.attached(AdmitGate)


def _admittable(
    values: dict[str, Any], spec: TaskSpec, policy: Policy, registered: Sequence[Pool]
) -> repository.Admittable | None:
    """What admitting the new task in its create needs, or None when it cannot be admitted now anyway (no
    pool has its tags: the pass says so in its status detail)."""
    pool = policy.route(values["worker_tags"], values["org_id"], registered)
    if pool is None:
        return None
    dispatch = TaskDispatch(
        task_id=values["id"],
        org_id=values["org_id"],
        attempt=values["attempt"],
        priority=values["priority"],
        timeout_seconds=values["timeout_seconds"],
        spec=spec,
    )
    plan_limits, pools = _routing_json(policy, tuple(registered))
    return repository.Admittable(
        pool=pool,
        org_limit=policy.limit_for(values["plan"]),
        plan_limits=plan_limits,
        default_limit=policy.default_concurrency,
        pools=pools,
        dispatch=(
            subjects.task_run(pool, values["priority"]),
            dispatch.model_dump_json().encode(),
            subjects.dispatch_msg_id(values["id"], values["attempt"]),
        ),
    )


_ROUTING: dict[tuple[int, tuple[Pool, ...]], tuple[Policy, str, str]] = {}


def _routing_json(policy: Policy, registered: tuple[Pool, ...]) -> tuple[str, str]:
    """The plan limits and every pool's tags as JSON (`Admittable`), made once per policy and set of
    registered pools (the policy is kept with them, so its id cannot be another's)."""
    key = (id(policy), registered)
    found = _ROUTING.get(key)
    if found is None:
        # as `Policy.route` sees them: a registered pool wins over a POOLS entry of the same name
        by_key: dict[str, dict[str, Any]] = {
            k: {"org": None, "tags": sorted(t)} for k, t in policy.pools.items()
        }
        by_key |= {p.key: {"org": p.org_id, "tags": sorted(p.tags)} for p in registered}
        pools = list(by_key.values())
        if len(_ROUTING) > 64:  # registered pools changed many times: start again
            _ROUTING.clear()
        found = _ROUTING[key] = (policy, json.dumps(policy.plan_limits), json.dumps(pools))
    return found[1], found[2]


_JSON_COLUMNS = ("worker_tags", "spec", "secret_names", "task_metadata")


def _json_columns(values: dict[str, Any]) -> dict[str, Any]:
    """The row's column values for a text statement: JSONB ones as JSON text, `task_metadata` as `metadata`."""
    row = {k: v for k, v in values.items() if k not in _JSON_COLUMNS}
    for name in _JSON_COLUMNS:
        row["metadata" if name == "task_metadata" else name] = json.dumps(values[name], separators=(",", ":"))
    return row


def _created_event(org_id: str, values: dict[str, Any]) -> events.OutboxMessage:
    created = TaskEventData(task_id=values["id"], status="queued", attempt=1)
    return events.message(org_id, EventType.TASK_CREATED, created, webhook_url=values["webhook_url"])


def _replayed(existing: Task, key: str, body_hash: str) -> TaskPublic:
    """The task a used key made, when the request is the same one again; a different body under the key is
    a 409 naming it (a task made before keys were held to a body has no hash, and matches any)."""
    if existing.idempotency_hash is not None and existing.idempotency_hash != body_hash:
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for a different request (task {existing.id}); "
            "send the same body to get that task again, or use a new key for a new task",
            field="Idempotency-Key",
            code="idempotency_key_reused",
        )
    return to_public(existing)
