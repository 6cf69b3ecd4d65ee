"""What an import already did, so a second run changes nothing: one row per MVP record taken (its kind and
MVP id, in the organization it went to) with the platform id it became. The ops tool's own schema, `ops`,
holds nothing else; backups carry it like the services' schemas."""

from __future__ import annotations

from typing import Any

import psycopg

SCHEMA = "ops"

_DDL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.mvp_imports (
    source text NOT NULL,
    kind text NOT NULL,
    mvp_id text NOT NULL,
    target_id text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, kind, mvp_id)
);
"""


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(_DDL)


def taken(conn: psycopg.Connection[Any], source: str) -> dict[tuple[str, str], str]:
    """(kind, MVP id) -> platform id of everything imported from `source` before."""
    exists = conn.execute("SELECT to_regclass('ops.mvp_imports')").fetchone()
    if not exists or exists[0] is None:
        return {}
    rows = conn.execute(
        "SELECT kind, mvp_id, target_id FROM ops.mvp_imports WHERE source = %s", (source,)
    ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def record(conn: psycopg.Connection[Any], source: str, kind: str, mvp_id: str, target_id: str) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO ops.mvp_imports (source, kind, mvp_id, target_id) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (source, kind, mvp_id, target_id),
        )
