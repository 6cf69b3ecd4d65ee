"""The database part of a backup: every table of the platform's schemas, read in one REPEATABLE READ
transaction (one snapshot for all of them, so a task and its attempts, logs and outbox rows agree), written
with COPY in PostgreSQL's text format, and loaded back with COPY in foreign-key order in one transaction.

No pg_dump: this runs wherever the ops package is installed, against any PostgreSQL the platform supports.
The schema itself is not in the archive: restore recreates it at the archive's revision with the service's
own migrations, so the rows meet the columns they were written for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

VERSION_TABLE = "alembic_version"


def libpq_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(database_url))


def existing_schemas(conn: psycopg.Connection[Any], wanted: Iterable[str]) -> list[str]:
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) ORDER BY nspname", (list(wanted),)
    ).fetchall()
    return [r[0] for r in rows]


def tables(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
        (schema,),
    ).fetchall()
    return [r[0] for r in rows if r[0] != VERSION_TABLE]


def columns(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    # generated columns are computed again on load; COPY cannot write them
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0"
        " AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
        (f'"{schema}"."{table}"',),
    ).fetchall()
    return [r[0] for r in rows]


def revision(conn: psycopg.Connection[Any], schema: str) -> str | None:
    found = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (schema, VERSION_TABLE)
    ).fetchone()
    if not found:
        return None
    row = conn.execute(
        sql.SQL("SELECT version_num FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(VERSION_TABLE))
    ).fetchone()
    return str(row[0]) if row else None


def sequences(conn: psycopg.Connection[Any], schema: str) -> dict[str, dict[str, Any]]:
    names = conn.execute(
        "SELECT sequencename FROM pg_sequences WHERE schemaname = %s ORDER BY sequencename", (schema,)
    ).fetchall()
    found: dict[str, dict[str, Any]] = {}
    for (name,) in names:
        row = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(name)
            )
        ).fetchone()
        assert row is not None
        found[name] = {"last_value": int(row[0]), "is_called": bool(row[1])}
    return found


def export(database_url: str, schemas: Iterable[str], out: Path) -> dict[str, dict[str, Any]]:
    """Writes `db/<schema>/<table>.copy` under `out` for every table of the existing `schemas`, all from one
    snapshot. Returns, per schema: its alembic revision, its tables (columns, rows, file) and sequences."""
    found: dict[str, dict[str, Any]] = {}
    with connect(database_url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            for schema in existing_schemas(conn, schemas):
                entry: dict[str, Any] = {"revision": revision(conn, schema), "tables": {}}
                for table in tables(conn, schema):
                    cols = columns(conn, schema, table)
                    member = f"db/{schema}/{table}.copy"
                    rows = _copy_out(conn, schema, table, cols, out / member)
                    entry["tables"][table] = {"columns": cols, "rows": rows, "member": member}
                entry["sequences"] = sequences(conn, schema)
                found[schema] = entry
    return found


def _copy_out(conn: psycopg.Connection[Any], schema: str, table: str, cols: list[str], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    statement = sql.SQL("COPY {}.{} ({}) TO STDOUT").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols))
    )
    rows = 0
    with path.open("wb") as fh, conn.cursor().copy(statement) as copy:
        for block in copy:
            data = bytes(block)
            rows += data.count(b"\n")  # text format: one line per row, newlines in values are escaped
            fh.write(data)
    return rows


def non_empty_tables(conn: psycopg.Connection[Any], schemas: Iterable[str]) -> list[str]:
    """`schema.table` of every table that holds a row (the version tables aside)."""
    busy = []
    for schema in existing_schemas(conn, schemas):
        for table in tables(conn, schema):
            query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.{})").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            row = conn.execute(query).fetchone()
            if row and row[0]:
                busy.append(f"{schema}.{table}")
    return busy


def drop_schemas(conn: psycopg.Connection[Any], schemas: Iterable[str]) -> None:
    with conn.transaction():
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _load_order(conn: psycopg.Connection[Any], names: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Referenced tables before the tables that reference them (foreign keys checked row by row)."""
    wanted = set(names)
    deps: dict[tuple[str, str], set[tuple[str, str]]] = {n: set() for n in names}
    rows = conn.execute(
        "SELECT cn.nspname, c.relname, fn.nspname, f.relname FROM pg_constraint k"
        " JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace"
        " JOIN pg_class f ON f.oid = k.confrelid JOIN pg_namespace fn ON fn.oid = f.relnamespace"
        " WHERE k.contype = 'f'"
    ).fetchall()
    for cs, ct, fs, ft in rows:
        if (cs, ct) in wanted and (fs, ft) in wanted and (cs, ct) != (fs, ft):
            deps[(cs, ct)].add((fs, ft))
    ordered: list[tuple[str, str]] = []
    while deps:
        ready = sorted(n for n, d in deps.items() if not d - set(ordered))
        if not ready:  # a cycle: load the rest as they come; the foreign keys will say what is wrong
            ready = sorted(deps)
        for n in ready:
            ordered.append(n)
            del deps[n]
    return ordered


def load(database_url: str, found: dict[str, dict[str, Any]], root: Path) -> int:
    """COPY every archived table back (the schemas exist at the archive's revisions) and set the sequences,
    in one transaction. Returns the number of rows loaded."""
    total = 0
    with connect(database_url) as conn, conn.transaction():
        names = [(schema, table) for schema, entry in found.items() for table in entry["tables"]]
        for schema, table in _load_order(conn, names):
            meta = found[schema]["tables"][table]
            present = set(columns(conn, schema, table))
            missing = [c for c in meta["columns"] if c not in present]
            if missing:
                raise RuntimeError(f"{schema}.{table} has no column {', '.join(missing)} at this revision")
            statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
                sql.Identifier(schema),
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, meta["columns"])),
            )
            with (root / meta["member"]).open("rb") as fh, conn.cursor().copy(statement) as copy:
                while block := fh.read(1 << 20):
                    copy.write(block)
            total += int(meta["rows"])
        for schema, entry in found.items():
            for name, seq in entry.get("sequences", {}).items():
                conn.execute(
                    "SELECT setval(%s::regclass, %s, %s)",
                    (f'"{schema}"."{name}"', seq["last_value"], seq["is_called"]),
                )
    return total


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()
