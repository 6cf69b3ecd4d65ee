"""One Alembic history per service, each in its own schema with its own version table.

A service's `migrations/env.py` is two lines: it imports its metadata and calls `run_env(metadata)`.
`upgrade()` runs them programmatically (launcher, tests); `python -m browserfleet_core.migrations
revision <service> -m "msg"` autogenerates a new revision against a live database.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import Connection

from .db import to_driver_url

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (and Mako, Pygments under it) is imported where a migration runs, not where a service merely
# starts: a second of CPU per service start-up that `run` without migrate_on_start never needed.


def revision_config(package: str, database_url: str) -> Config:
    """The Alembic config of one service's history against `database_url` (upgrade, revision, check)."""
    from alembic.config import Config

    module = importlib.import_module(package)
    assert module.__file__ is not None
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(module.__file__).parent / "migrations"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(package: str, database_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(revision_config(package, database_url), revision)


def upgrade_all(packages: list[str]) -> None:
    """Each package's history to head, in order, against DATABASE_URL. Gated (runner.START_GATE, the dev
    stack): Alembic and the packages' models are imported first, while the database is still starting, and
    DATABASE_URL comes with the environment the gate sends."""
    from .runner import START_GATE, wait_at_gate

    if os.environ.get(START_GATE) == "stdin":
        preload = ["alembic.command", "alembic.config", "alembic.runtime.migration", "psycopg"]
        wait_at_gate(preload + [f"{package}.models" for package in packages])
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        raise SystemExit("DATABASE_URL is required")
    for package in packages:
        upgrade(package, database_url)


def run_env(metadata: MetaData) -> None:
    """Body of every service's env.py (online mode only: migrations always run against a database)."""
    from alembic import context

    schema = metadata.schema
    assert schema, "service metadata must carry its schema"
    url = context.config.attributes.get("database_url")
    if not url:
        raise RuntimeError("database_url missing: run migrations through browserfleet_core.migrations")
    engine = create_engine(to_driver_url(url))

    def include_name(name: str | None, type_: str, parent_names: object) -> bool:
        return name == schema if type_ == "schema" else True

    with engine.connect() as connection:
        # concurrent replicas starting at once: one migrates, the others wait on this lock
        connection.execute(text("SELECT pg_advisory_lock(hashtext(:s))"), {"s": f"migrate:{schema}"})
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.commit()
        _configure(connection, metadata, schema, include_name)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        connection.execute(text("SELECT pg_advisory_unlock(hashtext(:s))"), {"s": f"migrate:{schema}"})
        connection.commit()
    engine.dispose()


def _configure(connection: Connection, metadata: MetaData, schema: str, include_name: Any) -> None:
    from alembic import context

    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=include_name,
        compare_type=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m browserfleet_core.migrations")
    sub = parser.add_subparsers(dest="cmd", required=True)
    rev = sub.add_parser("revision", help="autogenerate a revision for one service")
    rev.add_argument("package", help="e.g. browserfleet_auth")
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument("--database-url", required=True)
    up = sub.add_parser("upgrade")
    up.add_argument("package")
    # the environment's DATABASE_URL by default: a URL on the command line shows its password to `ps`
    up.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    up.add_argument("--revision", default="head", help="stop at this revision (restore: the archive's)")
    every = sub.add_parser("upgrade-all", help="every history given, in order, to head (DATABASE_URL)")
    every.add_argument("packages", nargs="+")
    args = parser.parse_args()
    if args.cmd == "upgrade-all":
        upgrade_all(args.packages)
        return
    if not args.database_url:
        parser.error("--database-url or DATABASE_URL is required")
    if args.cmd == "revision":
        from alembic import command

        cfg = revision_config(args.package, args.database_url)
        command.upgrade(cfg, "head")
        command.revision(cfg, message=args.message, autogenerate=True)
    else:
        upgrade(args.package, args.database_url, args.revision)


if __name__ == "__main__":
    main()
