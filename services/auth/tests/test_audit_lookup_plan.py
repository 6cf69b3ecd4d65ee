"""The call-entry statements find an entry by (org_id, request_id) with one exact index probe, whatever plan a
connection has cached: with a generic plan forced, over a log of thousands of entries in one organization,
the close statement's lookup is an index condition on both columns (with only single-column indexes it could
probe org_id's and read every entry the organization ever wrote). Real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from browserfleet_auth.repository import audit_batch

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
