"""Group commit of the gateway's call entries: the `RECORD_REQUEST`s in hand at once are one statement.

Every state-changing call reaches auth twice (its entry opened, then closed). Written one statement per
record, auth spent most of its CPU building SQLAlchemy constructs and most of its wall time in round trips and
commits. Here the records that arrive while a statement is in flight wait for the next one, which writes them
all: one fixed SQL text (prepared once per connection by psycopg, no SQLAlchemy statement per call), one
round trip and one commit (autocommit: the statement commits on its own) for the whole batch. A record is
answered only once its statement has committed, so an opened entry is as durable when `begin` returns as
before.

If a batch fails, each of its records is retried alone, so one record PostgreSQL refuses (a value too long
for its column) fails only its own call. A record the statement cannot take (a repeated phase, a call
refused before it was opened, an entry auth wrote first) comes back `False` and takes the caller's
transaction path, exactly as the one-statement path did.

Every call waits for its entry, so what one statement costs beyond PostgreSQL's own work is latency of every
state-changing call. The writer runs one statement at a time, so it keeps one connection of its own (autocommit,
made from the pool's connect arguments) instead of checking one out of SQLAlchemy's pool per statement, and a
record alone in its batch (every call of a quiet platform) is a one-row statement with scalar parameters
rather than the batch's eighteen arrays. Together they took about half of the writer's CPU per record."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from browserfleet_contracts.auth import RequestAudit
from browserfleet_core.db import Database
from psycopg import AsyncRawCursor
from sqlalchemy import Table

from ..models import AuditLog

# a bound on one statement's size; a burst larger than this is several statements back to back
MAX_BATCH: Final = 256

_AUDIT: Table = AuditLog.__table__  # type: ignore[attr-defined]
_TABLE = f"{_AUDIT.schema}.{_AUDIT.name}" if _AUDIT.schema else _AUDIT.name

# An entry is found by its request id; the organization is compared with IS NOT DISTINCT FROM, which no index
# serves, so that no plan — a prepared statement keeps the generic plan made after five runs, maybe on a near
# empty log — can probe the org_id index and read every entry of the organization for each call (seen: 95 M
# index entries read over a 6,000-task burst, PostgreSQL CPU per task 2.5-2.9 ms instead of 1.0).
# `o`/`c`: the batch's opens and closes, one row each, numbered by their place in the batch. Of several
# records of one call in a batch only the first is written (DISTINCT ON ... ORDER BY n): the others answer
# False and take the transaction, where a repeated phase changes nothing, as it would have one at a time.
# Opens and closes of one call are never in the same batch (the gateway closes a call only once its open
# has been answered), so the UPDATE not seeing this statement's INSERT changes nothing. The outer SELECT
# names the records written; PostgreSQL runs both data-modifying CTEs to completion either way. The arrays go
# in PostgreSQL's binary format (`%(name)b`): in the text format psycopg escapes every element with a regular
# expression (~9.5 µs for a detail's JSON, ~0.2 µs binary).
_SQL: Final = f"""
WITH o AS (
    SELECT DISTINCT ON (v.org_id, v.request_id) v.*
    FROM unnest(
        %(o_n)b::int[], %(o_at)b::timestamptz[], %(o_action)b::text[], %(o_org)b::text[], %(o_user)b::text[],
        %(o_key)b::text[], %(o_ip)b::text[], %(o_target)b::text[], %(o_detail)b::text[], %(o_rid)b::text[],
        %(o_route)b::text[]
    ) AS v(n, at, action, org_id, actor_user_id, actor_api_key_id, client_ip, target, detail, request_id, route)
    WHERE NOT EXISTS (
        SELECT 1 FROM {_TABLE} a WHERE a.request_id = v.request_id AND a.org_id IS NOT DISTINCT FROM v.org_id
    )
    ORDER BY v.org_id, v.request_id, v.n
), opened AS (
    INSERT INTO {_TABLE}
        (at, action, outcome, org_id, actor_user_id, actor_api_key_id, client_ip, target, detail, request_id,
         route)
    SELECT at, action, 'pending', org_id, actor_user_id, actor_api_key_id, client_ip, target, detail::jsonb,
           request_id, route
    FROM o ORDER BY n
    RETURNING 1
), c AS (
    SELECT DISTINCT ON (v.org_id, v.request_id) v.*
    FROM unnest(
        %(c_n)b::int[], %(c_org)b::text[], %(c_rid)b::text[], %(c_status)b::int[], %(c_outcome)b::text[],
        %(c_target)b::text[], %(c_code)b::text[]
    ) AS v(n, org_id, request_id, status, outcome, target, code)
    ORDER BY v.org_id, v.request_id, v.n
), closed AS (
    UPDATE {_TABLE} a SET
        status = c.status,
        outcome = CASE WHEN a.outcome IN ('pending', 'success') THEN c.outcome ELSE a.outcome END,
        target = coalesce(a.target, c.target),
        detail = CASE WHEN c.code IS NOT NULL AND c.status >= 400
                      THEN a.detail || jsonb_build_object('code', c.code) ELSE a.detail END
    FROM c
    WHERE a.id = (
        SELECT min(b.id) FROM {_TABLE} b
        WHERE b.request_id = c.request_id AND b.org_id IS NOT DISTINCT FROM c.org_id
    )
      AND a.status IS NULL AND a.route IS NOT NULL
    RETURNING c.n
)
SELECT n FROM o UNION ALL SELECT n FROM closed
"""  # noqa: S608 (what is interpolated is the table's own name, never input)


# The statement above for a batch of one record: the same rows written and the same answer (a row back when the
# record was written), with scalar parameters ($n: psycopg's raw cursor, no placeholder conversion per call).
_OPEN_ONE: Final = f"""
INSERT INTO {_TABLE}
    (at, action, outcome, org_id, actor_user_id, actor_api_key_id, client_ip, target, detail, request_id, route)
SELECT $1::timestamptz, $2::text, 'pending', $3::text, $4::text, $5::text, $6::text, $7::text, $8::jsonb,
       $9::text, $10::text
WHERE NOT EXISTS (
    SELECT 1 FROM {_TABLE} a WHERE a.request_id = $9::text AND a.org_id IS NOT DISTINCT FROM $3::text
)
RETURNING 1
"""  # noqa: S608 (the table's own name)

_CLOSE_ONE: Final = f"""
UPDATE {_TABLE} a SET
    status = $3::int,
    outcome = CASE WHEN a.outcome IN ('pending', 'success') THEN $4::text ELSE a.outcome END,
    target = coalesce(a.target, $5::text),
    detail = CASE WHEN $6::text IS NOT NULL AND $3::int >= 400
                  THEN a.detail || jsonb_build_object('code', $6::text) ELSE a.detail END
WHERE a.id = (
    SELECT min(b.id) FROM {_TABLE} b WHERE b.request_id = $2::text AND b.org_id IS NOT DISTINCT FROM $1::text
)
  AND a.status IS NULL AND a.route IS NOT NULL
RETURNING 1
"""  # noqa: S608 (the table's own name)


def outcome_of(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403, 429):
        return "refused"
    return "failed"


@dataclass(slots=True)
class _Record:
    at: datetime
    req: RequestAudit
    done: asyncio.Future[bool]


def _detail(req: RequestAudit) -> str:
    return json.dumps({"path": req.path} if req.path else {})


def _one(record: _Record) -> tuple[str, tuple[Any, ...]]:
    """The one-row statement of a record and its parameters."""
    req, actor = record.req, record.req.actor
    target = req.target[:320] if req.target else None
    if req.phase == "begin":
        return _OPEN_ONE, (
            record.at,
            req.action,
            actor.org_id,
            actor.user_id,
            actor.api_key_id,
            actor.client_ip,
            target,
            _detail(req),
            actor.request_id,
            req.route,
        )
    assert req.status is not None
    return _CLOSE_ONE, (
        actor.org_id,
        actor.request_id,
        req.status,
        outcome_of(req.status),
        target,
        req.code,
    )


def _params(batch: list[_Record]) -> dict[str, list[Any]]:
    p: dict[str, list[Any]] = {
        k: []
        for k in [
            "o_n",
            "o_at",
            "o_action",
            "o_org",
            "o_user",
            "o_key",
            "o_ip",
            "o_target",
            "o_detail",
            "o_rid",
            "o_route",
            "c_n",
            "c_org",
            "c_rid",
            "c_status",
            "c_outcome",
            "c_target",
            "c_code",
        ]
    }
    for n, record in enumerate(batch):
        req, actor = record.req, record.req.actor
        target = req.target[:320] if req.target else None
        if req.phase == "begin":
            p["o_n"].append(n)
            p["o_at"].append(record.at)
            p["o_action"].append(req.action)
            p["o_org"].append(actor.org_id)
            p["o_user"].append(actor.user_id)
            p["o_key"].append(actor.api_key_id)
            p["o_ip"].append(actor.client_ip)
            p["o_target"].append(target)
            p["o_detail"].append(_detail(req))
            p["o_rid"].append(actor.request_id)
            p["o_route"].append(req.route)
        else:
            assert req.status is not None
            p["c_n"].append(n)
            p["c_org"].append(actor.org_id)
            p["c_rid"].append(actor.request_id)
            p["c_status"].append(req.status)
            p["c_outcome"].append(outcome_of(req.status))
            p["c_target"].append(target)
            p["c_code"].append(req.code)
    return p


# Every statement of the writer finds its few rows by index (an entry by (request_id, org_id), a row by id).
# Prepared, a statement keeps the generic plan PostgreSQL made after five runs; made while the log was small
# and not yet analysed (a new platform, a burst), that plan scanned the whole log and hash-joined it, in each
# batch, for good: PostgreSQL CPU per task 1.0 or 2.5-2.9 ms from one benchmark run to the next. On the
# writer's own connection the planner is left only index probes and nested loops, whatever the table's size.
NESTED_LOOPS_ONLY: Final = {"enable_seqscan": "off", "enable_hashjoin": "off", "enable_mergejoin": "off"}


class RequestAuditBatch:
    """The group-committing writer of one database's call entries (one per `Database`: `of(db)`)."""

    @classmethod
    def of(cls, db: Database) -> RequestAuditBatch:
        return db.attached(cls)

    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: list[_Record] = []
        self._writer: asyncio.Task[None] | None = None
        self._own = db.own_connection(NESTED_LOOPS_ONLY)

    @staticmethod
    def takes(req: RequestAudit) -> bool:
        """Whether the statement can write this record: a call's open, or the close of an answered call."""
        return bool(req.actor.request_id) and (req.phase == "begin" or req.status is not None)

    async def write(self, at: datetime, req: RequestAudit) -> bool:
        """The record written and committed (True), or not the statement's to write (False: nothing
        changed, the caller takes the transaction). Raises when PostgreSQL refuses it."""
        record = _Record(at, req, asyncio.get_running_loop().create_future())
        self._waiting.append(record)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        return await record.done

    async def _write_all(self) -> None:
        batch: list[_Record] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    written = await self._execute(batch)
                except Exception:
                    await self._one_by_one(batch)
                else:
                    for n, record in enumerate(batch):
                        if not record.done.done():
                            record.done.set_result(n in written)
        except BaseException:  # cancelled (shutdown): no record is left waiting forever
            for record in (*batch, *self._waiting):
                if not record.done.done():
                    record.done.set_exception(RuntimeError("the audit writer stopped"))
            self._waiting = []
            raise
        finally:
            self._writer = None

    async def _one_by_one(self, batch: list[_Record]) -> None:
        for record in batch:
            if record.done.done():
                continue
            try:
                written = await self._execute([record])
            except Exception as exc:
                record.done.set_exception(exc)
            else:
                record.done.set_result(0 in written)

    async def _execute(self, batch: list[_Record]) -> set[int]:
        pg = await self._own.get()
        try:
            if len(batch) == 1:
                sql, args = _one(batch[0])
                async with AsyncRawCursor(pg) as raw:
                    await raw.execute(sql, args, prepare=True)
                    return {0} if await raw.fetchall() else set()
            cursor = await pg.execute(_SQL, _params(batch), prepare=True)
            return {n for (n,) in await cursor.fetchall()}
        except BaseException:
            await self._own.failed(pg)
            raise

    async def close(self) -> None:
        """Close the writer's connection (the service stops: call it once no record can arrive any more).
        A record written later opens a new one."""
        await self._own.close()
