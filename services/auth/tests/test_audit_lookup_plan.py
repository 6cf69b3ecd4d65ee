"""The call-entry statements find an entry by (org_id, request_id) with one exact index probe, whatever plan a
connection has cached: with a generic plan forced, over a log of thousands of entries in one organization,
the close statement's lookup is an index condition on both columns (with only single-column indexes it could
probe org_id's and read every entry the organization ever wrote). Real PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import psycopg
from browserfleet_auth.repository import audit_batch
from browserfleet_auth.repository.audit_batch import RequestAuditBatch
from browserfleet_core.db import Database

ENTRIES = 3_000


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def test_the_lookup_is_one_exact_probe_with_a_generic_plan(fresh_database: Callable[[], str]) -> None:
    with psycopg.connect(fresh_database(), autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO auth.audit_log (at, action, outcome, org_id, detail, request_id, route)
            SELECT now(), 'api.create_task', 'success', 'org-big', '{}', 'req-' || n, 'POST /api/v1/tasks'
            FROM generate_series(1, %s) AS n
            """,
            (ENTRIES,),
        )
        conn.execute("ANALYZE auth.audit_log")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        # the close statement of a lone record, as the writer prepares it
        conn.execute(f"PREPARE close_one(text, text, int, text, text, text) AS {audit_batch._CLOSE_ONE}")
        with conn.transaction(force_rollback=True):
            row = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE close_one('org-big', 'req-17', 201, 'success', NULL, NULL)"
            ).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    scans = [n for n in _nodes(plan[0]["Plan"]) if "Index Cond" in n and "request_id" in n["Index Cond"]]
    assert scans, plan
    assert all("org_id" in n["Index Cond"] for n in scans), [n["Index Cond"] for n in scans]
    assert all(n.get("Actual Rows", 0) <= 1 for n in scans), scans


def _numbered(sql: str) -> tuple[str, int]:
    """The batch statement with its %(name)s parameters as $n (for PREPARE), and how many there are."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, sql), len(names)


async def test_the_writers_plans_probe_indexes_even_when_made_on_an_empty_log(
    fresh_database: Callable[[], str],
) -> None:
    """The plan PostgreSQL keeps for a prepared statement may be made while the log is empty and never
    analysed: on the writer's own connection it must still be index probes, never a scan of the log."""
    db = Database(fresh_database(), "auth", pool_size=1)
    try:
        pg = await RequestAuditBatch.of(db)._own.get()
        await pg.execute("SET plan_cache_mode = force_generic_plan")  # the plan cached after five runs
        sql, count = _numbered(audit_batch._SQL)
        await pg.execute(f"PREPARE batch AS {sql}")
        cursor = await pg.execute(f"EXPLAIN EXECUTE batch({', '.join(['NULL'] * count)})")
        plan = "\n".join(line for (line,) in await cursor.fetchall())
    finally:
        await RequestAuditBatch.of(db).close()
        await db.dispose()
    assert "Seq Scan" not in plan and "Hash Join" not in plan and "Hash Right Anti Join" not in plan, plan
    assert "Index Cond: (id = (SubPlan" in plan, plan  # the entry to close, found by its id
