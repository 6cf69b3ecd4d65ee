"""The statements that move tasks `queued` -> `assigned` with their TASKS dispatch in the outbox: a create that
admits its own task, and the admission pass's read and write.

Every admitter holds the advisory lock ADMISSION_LOCK, so per-org counts cannot be overrun by two of them at
once. A create takes it inside its one statement (`pg_try_advisory_xact_lock`; taken: the task stays queued
for the pass), and so does the pass's read: such a statement's snapshot was taken before it got the lock, so
an admitter that committed in between is invisible to it. Each admitter therefore writes its transaction id to
the sequence `admission_xid` (read outside of any snapshot) while it holds the lock; a statement whose
snapshot does not yet see that transaction knows its view of the slots is stale, and a create then leaves its
task queued, a pass re-reads the slots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from browserfleet_core.db import AsyncSession
from psycopg.rows import namedtuple_row
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import state
from .admission import ADMISSION_LOCK, PRIORITY_RANK
from .driver import Fixed

_SEQ = "'scheduler.admission_xid'"
_ACTIVE = ", ".join(f"'{s}'" for s in sorted(state.ACTIVE))
_FROM_FOR_ASSIGNED = ", ".join(f"'{s}'" for s in sorted(state.allowed_from("assigned")))


def _rank(column: str) -> str:
    whens = " ".join(f"WHEN '{p}' THEN {r}" for p, r in PRIORITY_RANK.items())
    return f"CASE {column} {whens} ELSE {len(PRIORITY_RANK)} END"


# true when the statement's snapshot sees the last admitter's transaction (or none ever admitted), or the last
# admitter is the statement's own transaction (a group of creates in one, `create_and_admit_many`: a snapshot
# never lists its own transaction as visible, and an earlier statement of it holds the lock since); only
# meaningful once the lock is held, as every admitter sets the sequence while holding it
_LAST_ADMITTER = f"CAST(CAST(pg_sequence_last_value({_SEQ}) AS text) AS xid8)"
_FRESH = f"""COALESCE(pg_visible_in_snapshot({_LAST_ADMITTER}, pg_current_snapshot())
        OR COALESCE({_LAST_ADMITTER} = pg_current_xact_id_if_assigned(), false), true)"""
# set by an admitter, while it holds the lock, to its own transaction id
_MARK = f"setval({_SEQ}, CAST(CAST(pg_current_xact_id() AS text) AS bigint))"


def _slots_held(org: str) -> str:
    return f"(SELECT count(*) FROM scheduler.tasks a WHERE a.org_id = {org} AND a.status IN ({_ACTIVE}))"  # noqa: S608 (constant SQL)


# The columns a create writes (creation.build_task_values, `task_metadata` as `metadata`), and their types.
TASK_COLUMNS: dict[str, str] = {
    "id": "varchar", "org_id": "varchar", "title": "varchar", "kind": "varchar", "plan": "varchar",
    "priority": "varchar", "worker_tags": "jsonb", "spec": "jsonb", "secret_names": "jsonb",
    "timeout_seconds": "integer", "max_attempts": "integer", "attempt": "integer", "webhook_url": "text",
    "metadata": "jsonb", "created_by": "varchar", "idempotency_key": "varchar",
    "idempotency_hash": "varchar", "created_at": "timestamptz", "updated_at": "timestamptz",
}  # fmt: skip

# At most this many queued tasks are looked at ahead of a new one: more than that (a backlog of orgs at their
# limits, say) and the create leaves its task to the pass rather than scan the whole queue on every create.
AHEAD_SCAN = 256

# A new task, admitted in the same statement when its org has a free slot and no queued task may go first:
# none that may start now (eligible, some pool has its tags, and its org has a free slot or is the new task's
# own) at a priority at or above the new task's. Fair order could serve any of those first; one whose org is
# at its limit, or that no pool can take, the pass does not dispatch either, so it holds nobody back. A task
# queued after this statement's snapshot was created concurrently with it, in no defined order. Else the task
# is inserted `queued` for the pass. Either way with its `task.created` outbox row, and when admitted
# with its TASKS dispatch; returns the outbox rows and whether the task was admitted.
CREATE_AND_ADMIT = text(
    f"""
    WITH ahead AS (
        SELECT q.org_id, q.plan, q.worker_tags FROM scheduler.tasks q
         WHERE q.status = 'queued' AND (q.not_before IS NULL OR q.not_before <= :now)
           AND {_rank("q.priority")} <= :rank
         LIMIT :ahead_scan
    ), verdict AS (
        -- in this order: what the snapshot shows queued ahead holds whatever else, without the lock (a
        -- burst of creates behind a queue leaves the lock to the pass); the slots are counted under it
        SELECT CASE WHEN EXISTS (
                        SELECT 1 FROM ahead q
                         WHERE CASE WHEN NOT EXISTS (
                                         SELECT 1 FROM jsonb_array_elements(CAST(:pools AS jsonb)) p
                                          WHERE (p ->> 'org' IS NULL OR p ->> 'org' = q.org_id)
                                            AND p -> 'tags' @> q.worker_tags) THEN false
                                    WHEN q.org_id = :org_id THEN true
                                    ELSE {_slots_held("q.org_id")} < COALESCE(
                                         CAST(CAST(:plan_limits AS jsonb) ->> q.plan AS integer), :default_limit)
                               END) THEN false
                    WHEN (SELECT count(*) FROM ahead) >= :ahead_scan THEN false
                    WHEN NOT pg_try_advisory_xact_lock(:lock_key) THEN false
                    WHEN NOT {_FRESH} THEN false
                    ELSE {_slots_held(":org_id")} < :org_limit
               END AS admit
    ), created AS (
        INSERT INTO scheduler.tasks ({", ".join(TASK_COLUMNS)}, artifacts, status, status_detail, pool,
                                     dispatched_at)
        SELECT {", ".join(f"CAST(:task_{c} AS {t})" for c, t in TASK_COLUMNS.items())}, '[]'::jsonb,
               CASE WHEN admit THEN 'assigned' ELSE 'queued' END,
               CASE WHEN admit THEN :assigned_detail ELSE :queued_detail END,
               CASE WHEN admit THEN CAST(:pool AS varchar) END,
               CASE WHEN admit THEN CAST(:now AS timestamptz) END
          FROM verdict
        RETURNING status
    ), announced AS (
        INSERT INTO scheduler.outbox (subject, msg_id, payload, created_at)
        SELECT :created_subject, :created_msg_id, :created_payload, :now FROM created
        UNION ALL
        SELECT :dispatch_subject, :dispatch_msg_id, :dispatch_payload, :now FROM created WHERE status = 'assigned'
        RETURNING id, msg_id
    )
    SELECT a.id, a.msg_id, v.admit, CASE WHEN v.admit THEN {_MARK} END AS marked
      FROM verdict v LEFT JOIN announced a ON true
    """  # noqa: S608 (what is interpolated is constant SQL: statuses, priorities, column names)
)


_CREATE_AND_ADMIT = Fixed(CREATE_AND_ADMIT)


@dataclass(frozen=True)
class Admittable:
    """What a create needs to admit its task at once: the pool routing chose, the limit of the task's plan,
    and the dispatch message; for the tasks queued ahead, every plan's limit and every pool's tags."""

    pool: str
    org_limit: int
    plan_limits: str  # JSON object: plan -> limit
    default_limit: int
    pools: str  # JSON array of {"org": its org or null (the platform's), "tags": [...]}
    dispatch: tuple[str, bytes, str]  # subject, payload, msg id


@dataclass(frozen=True)
class Created:
    admitted: bool
    outbox: list[tuple[int, str]]  # (outbox id, msg id), task.created first


async def create_and_admit(
    conn: AsyncConnection,
    columns: dict[str, Any],
    created: tuple[str, bytes, str],
    admit: Admittable,
    details: tuple[str, str],
    now: datetime,
) -> Created:
    """The new task (`columns`, JSONB ones as JSON text) admitted if it may be, in one statement on an
    autocommit connection. `created`: its task.created (subject, payload, msg id); `details`: its status
    detail when admitted, when left queued."""
    rows = await _CREATE_AND_ADMIT.rows(conn, _create_params(columns, created, admit, details, now))
    return _created(rows, created[2])


@dataclass(frozen=True)
class CreateAdmit:
    """The arguments of one `create_and_admit`, as an item of `create_and_admit_many`."""

    columns: dict[str, Any]
    created: tuple[str, bytes, str]
    admit: Admittable
    details: tuple[str, str]
    now: datetime


async def create_and_admit_many(conn: AsyncConnection, items: Sequence[CreateAdmit]) -> list[Created]:
    """`create_and_admit` for each item, in order, in one transaction: one commit for all of them, and one
    round trip (psycopg's pipeline mode sends every statement, then waits once). Each statement sees the
    ones before it (READ COMMITTED, one snapshot per statement): a task admitted earlier in the group holds
    its org's slot, one left queued is ahead of the next of its org. The first statement that takes the
    admission lock holds it to the commit, so the later ones need not see their own transaction's mark as
    committed (`_FRESH`). A failure anywhere rolls all of them back."""
    if len(items) == 1:
        (item,) = items
        return [await create_and_admit(conn, item.columns, item.created, item.admit, item.details, item.now)]
    sql = _CREATE_AND_ADMIT.sql(conn)
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)
    cursors: list[psycopg.AsyncCursor[Any]] = []
    try:
        async with driver.pipeline(), driver.transaction():
            for item in items:
                cursor = driver.cursor(row_factory=namedtuple_row)
                await cursor.execute(
                    sql,
                    _create_params(item.columns, item.created, item.admit, item.details, item.now),
                    prepare=True,
                )
                cursors.append(cursor)
        return [_created(await c.fetchall(), item.created[2]) for c, item in zip(cursors, items, strict=True)]
    except psycopg.Error:
        if driver.broken or driver.closed:
            await conn.invalidate()
        raise
    finally:
        for cursor in cursors:
            await cursor.close()


def _create_params(
    columns: dict[str, Any],
    created: tuple[str, bytes, str],
    admit: Admittable,
    details: tuple[str, str],
    now: datetime,
) -> dict[str, Any]:
    params: dict[str, Any] = {f"task_{c}": columns[c] for c in TASK_COLUMNS}
    params |= {
        "lock_key": ADMISSION_LOCK,
        "org_id": columns["org_id"],
        "org_limit": admit.org_limit,
        "rank": PRIORITY_RANK.get(columns["priority"], len(PRIORITY_RANK)),
        "plan_limits": admit.plan_limits,
        "default_limit": admit.default_limit,
        "pools": admit.pools,
        "ahead_scan": AHEAD_SCAN,
        "now": now,
        "pool": admit.pool,
        "assigned_detail": details[0],
        "queued_detail": details[1],
        "created_subject": created[0],
        "created_payload": created[1],
        "created_msg_id": created[2],
        "dispatch_subject": admit.dispatch[0],
        "dispatch_payload": admit.dispatch[1],
        "dispatch_msg_id": admit.dispatch[2],
    }
    return params


def _created(rows: Sequence[Any], created_msg_id: str) -> Created:
    admitted = bool(rows[0].admit)
    outbox = sorted(((int(r.id), str(r.msg_id)) for r in rows), key=lambda r: r[1] != created_msg_id)
    return Created(admitted, outbox)


@dataclass
class Candidate:
    """A queued task as the admission pass reads it, with its org's slots held and last dispatch."""

    id: str
    org_id: str
    status: str
    status_detail: str | None
    priority: str
    plan: str | None
    worker_tags: list[str]
    attempt: int
    timeout_seconds: int
    spec: dict[str, Any]
    created_at: datetime
    active: int
    last_served: datetime | None


# The pass's read in one statement: the lock, the queued tasks that may start now (priority first then oldest
# first, locked SKIP LOCKED: a row a claim or cancel holds is left for the next pass) and each of their orgs'
# slots held and last dispatch. `held` false: another admitter has the lock; `fresh` false: the slots are
# from a snapshot older than the last admission, to be read again. `orgs` is MATERIALIZED: inlined, PostgreSQL
# put it inside the join with `cand` and counted an org's slots once per candidate, not once per org (27
# candidates of one org: 27 scans of everything it runs).
PASS_READ = text(
    f"""
    WITH gate AS (
        SELECT pg_try_advisory_xact_lock(:lock_key) AS held
    ), cand AS (
        SELECT t.id, t.org_id, t.status, t.status_detail, t.priority, t.plan, t.worker_tags, t.attempt,
               t.timeout_seconds, t.spec, t.created_at, {_rank("t.priority")} AS rank
          FROM scheduler.tasks t
         WHERE (SELECT held FROM gate) AND t.status = 'queued'
           AND (t.not_before IS NULL OR t.not_before <= :now)
         ORDER BY rank, t.created_at, t.id
         LIMIT :scan
           FOR UPDATE OF t SKIP LOCKED
    ), orgs AS MATERIALIZED (
        SELECT o.org_id, {_slots_held("o.org_id")} AS active,
               (SELECT d.dispatched_at FROM scheduler.tasks d
                 WHERE d.org_id = o.org_id AND d.dispatched_at IS NOT NULL
                 ORDER BY d.dispatched_at DESC LIMIT 1) AS last_served
          FROM (SELECT DISTINCT org_id FROM cand) o
    )
    SELECT g.held, CASE WHEN g.held THEN {_FRESH} END AS fresh, c.*, o.active, o.last_served
      FROM gate g LEFT JOIN (cand c JOIN orgs o ON o.org_id = c.org_id) ON true
     ORDER BY c.rank, c.created_at, c.id
    """  # noqa: S608 (constant SQL: statuses and priorities)
).columns(worker_tags=JSONB, spec=JSONB)


_ANY_QUEUED = text(
    "SELECT EXISTS (SELECT 1 FROM scheduler.tasks WHERE status = 'queued'"
    " AND (not_before IS NULL OR not_before <= :now))"
)


async def anything_queued(conn: AsyncConnection, now: datetime) -> bool:
    """Whether any task waits for admission now: a woken pass with nothing to do costs this one statement,
    not a transaction (most tasks are admitted in their create; a finish still wakes the pass)."""
    return bool((await conn.execute(_ANY_QUEUED, {"now": now})).scalar_one())


@dataclass(frozen=True)
class PassRead:
    held: bool
    fresh: bool
    candidates: list[Candidate]


async def pass_read(session: AsyncSession, now: datetime, scan: int) -> PassRead:
    rows = (await session.execute(PASS_READ, {"lock_key": ADMISSION_LOCK, "now": now, "scan": scan})).all()
    first = rows[0]
    if not first.held or first.id is None:
        return PassRead(bool(first.held), True, [])
    names = Candidate.__dataclass_fields__
    return PassRead(True, bool(first.fresh), [Candidate(**{n: getattr(r, n) for n in names}) for r in rows])


# The pass's write in one statement: the admitted tasks `assigned` to their pools, the status detail of those
# still waiting, the dispatches into the outbox (returned, to publish after the commit), and the sequence
# marked when anything was admitted. The status tests are `(...) IS TRUE` so that no index serves them: the rows
# are found by id (`claim_batch` says why).
PASS_WRITE = text(
    f"""
    WITH admitted AS (
        UPDATE scheduler.tasks t
           SET status = 'assigned', pool = d.pool, dispatched_at = :now, status_detail = d.detail,
               updated_at = :now
          FROM unnest(CAST(:a_ids AS varchar[]), CAST(:a_pools AS varchar[]), CAST(:a_details AS text[]))
               AS d(id, pool, detail)
         WHERE t.id = d.id AND (t.status IN ({_FROM_FOR_ASSIGNED})) IS TRUE
        RETURNING t.id
    ), waiting AS (
        UPDATE scheduler.tasks t
           SET status_detail = d.detail, updated_at = :now
          FROM unnest(CAST(:w_ids AS varchar[]), CAST(:w_details AS text[])) AS d(id, detail)
         WHERE t.id = d.id AND (t.status = 'queued') IS TRUE
        RETURNING t.id
    ), sent AS (
        INSERT INTO scheduler.outbox (subject, msg_id, payload, created_at)
        SELECT m.subject, m.msg_id, m.payload, :now
          FROM unnest(CAST(:m_subjects AS varchar[]), CAST(:m_msg_ids AS varchar[]), CAST(:m_payloads AS bytea[]))
               AS m(subject, msg_id, payload)
        ON CONFLICT (msg_id) DO NOTHING
        RETURNING id, subject, payload, msg_id
    )
    SELECT s.id, s.subject, s.payload, s.msg_id
      FROM (SELECT CASE WHEN cardinality(CAST(:a_ids AS varchar[])) > 0 THEN {_MARK} END AS marked) m
      LEFT JOIN sent s ON true
    """  # noqa: S608 (constant SQL: statuses)
)


async def pass_write(
    session: AsyncSession,
    now: datetime,
    admitted: Sequence[tuple[str, str, str]],
    waiting: Sequence[tuple[str, str]],
    dispatches: Sequence[tuple[str, bytes, str]],
) -> list[tuple[int, str, bytes, str]]:
    """`admitted`: (task id, pool, detail); `waiting`: (task id, detail); `dispatches`: (subject, payload,
    msg id). Returns the outbox rows inserted (id, subject, payload, msg id)."""
    params = {
        "now": now,
        "a_ids": [a[0] for a in admitted],
        "a_pools": [a[1] for a in admitted],
        "a_details": [a[2] for a in admitted],
        "w_ids": [w[0] for w in waiting],
        "w_details": [w[1] for w in waiting],
        "m_subjects": [m[0] for m in dispatches],
        "m_payloads": [m[1] for m in dispatches],
        "m_msg_ids": [m[2] for m in dispatches],
    }
    rows = (await session.execute(PASS_WRITE, params)).all()
    return [(int(r.id), r.subject, bytes(r.payload), r.msg_id) for r in rows if r.id is not None]
