"""The call-entry statements find an entry by its request id with an index probe, whatever plan a connection
kept: a generic plan made on a near-empty log and used on thousands of entries of one organization never
probes the org_id index (which reads every entry the organization ever wrote) nor scans the log. Real
PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import psycopg
from browserfleet_auth import repository
from browserfleet_auth.repository import audit_batch
from browserfleet_auth.repository.audit_batch import RequestAuditBatch
from browserfleet_core.db import Database
from sqlalchemy import create_engine

ENTRIES = 3_000


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def test_the_lone_statements_probe_by_request_id_whatever_plan_was_kept(
    fresh_database: Callable[[], str],
) -> None:
    with psycopg.connect(fresh_database(), autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        # prepared and run on an almost empty log, never analysed: the plan kept is made then, as on a new
        # platform whose log then grows by thousands of entries before autovacuum comes round
        conn.execute(f"PREPARE close_one(text, text, int, text, text, text) AS {audit_batch._CLOSE_ONE}")
        conn.execute(
            "PREPARE open_one(timestamptz, text, text, text, text, text, text, jsonb, text, text) AS "
            + audit_batch._OPEN_ONE
        )
        conn.execute("EXECUTE close_one('org-big', 'req-0', 201, 'success', NULL, NULL)")
        conn.execute(
            """
            INSERT INTO auth.audit_log (at, action, outcome, org_id, detail, request_id, route)
            SELECT now(), 'api.create_task', 'success', 'org-big', '{}', 'req-' || n, 'POST /api/v1/tasks'
            FROM generate_series(1, %s) AS n
            """,
            (ENTRIES,),
        )
        plans = []
        with conn.transaction(force_rollback=True):
            for call in (
                "close_one('org-big', 'req-17', 201, 'success', NULL, NULL)",
                "open_one(now(), 'api.create_task', 'org-big', NULL, NULL, NULL, NULL, '{}', 'req-new', 'POST /x')",
            ):
                row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {call}").fetchone()
                assert row is not None
                plans.append(row[0] if isinstance(row[0], list) else json.loads(row[0]))
    for plan in plans:
        nodes = _nodes(plan[0]["Plan"])
        assert not [n for n in nodes if n.get("Index Name") == "ix_auth_audit_log_org_id"], plan
        assert not [n for n in nodes if n.get("Node Type") == "Seq Scan"], plan
        scans = [n for n in nodes if "request_id" in n.get("Index Cond", "")]
        assert scans and all(n.get("Actual Rows", 0) <= 1 for n in scans), plan


def _numbered(sql: str) -> tuple[str, int]:
    """The batch statement with its %(name)s / %(name)b parameters as $n (for PREPARE), and how many there are."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)[sb]", number, sql), len(names)


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
    assert "ix_auth_audit_log_org_id" not in plan, plan  # every entry of the organization, for each call
    assert "Index Cond: (id = (SubPlan" in plan, plan  # the entry to close, found by its id


def _transaction_lookup() -> str:
    """The SQL of the writer's transaction path (`repository.audit_of_request`: a record the batch statement
    does not take, and auth's own detail written into a call's entry), as PostgreSQL gets it."""
    stmt = repository.audit_of_request_statement("org-big", "req-17")
    return str(stmt.compile(dialect=create_engine("postgresql+psycopg://").dialect))  # connects to nothing


def test_no_statement_of_the_writer_compares_the_organization_in_a_way_an_index_serves() -> None:
    """Which index a kept plan probes depends on when it was made, which the plan tests above cannot force;
    what rules out the organization's index is that no lookup offers it an indexable `org_id = ...`."""
    for sql in (audit_batch._SQL, audit_batch._OPEN_ONE, audit_batch._CLOSE_ONE, _transaction_lookup()):
        assert not re.search(r"\borg_id\s*=", sql), sql
        assert "org_id IS NOT DISTINCT FROM" in sql, sql
