"""`browserfleet-worker-gateway [run|migrate]`, and the operator's
`browserfleet-worker-gateway invite --pool NAME [--tags a,b] [--multi-use [--max-uses N]] [--ttl-days D]`,
which prints a platform invite code (its workers serve every organization). The database is the credential:
whoever can run this with DATABASE_URL is the operator."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from browserfleet_core.migrations import upgrade
from browserfleet_core.runner import service_main

from .settings import WorkerGatewaySettings


def _database_url() -> str:
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        raise SystemExit("browserfleet-worker-gateway: DATABASE_URL is required")
    return database_url


def invite(argv: list[str]) -> None:
    from browserfleet_contracts.workers import InviteCreate
    from browserfleet_core.db import Database
    from pydantic import ValidationError

    from . import invites
    from .models import SCHEMA

    parser = argparse.ArgumentParser(prog="browserfleet-worker-gateway invite")
    parser.add_argument("--pool", default="default")
    parser.add_argument("--name", default=None)
    parser.add_argument("--tags", default="", help="comma-separated")
    parser.add_argument(
        "--multi-use", action="store_true", help="a pool invite: one identity per registration"
    )
    parser.add_argument("--max-uses", type=int, default=None)
    parser.add_argument("--ttl-days", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        body = InviteCreate(
            name=args.name,
            pool=args.pool,
            tags=[t.strip() for t in args.tags.split(",") if t.strip()],
            multi_use=args.multi_use,
            max_uses=args.max_uses,
            ttl_seconds=round(args.ttl_days * 86_400),
        )
    except ValidationError as exc:
        raise SystemExit(f"browserfleet-worker-gateway invite: {exc.errors()[0]['msg']}") from None

    async def create() -> str:
        db = Database(_database_url(), SCHEMA, pool_size=1)
        try:
            return (await db.run(invites.create_invite, None, body)).code
        finally:
            await db.dispose()

    print(asyncio.run(create()))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["invite"]:
        invite(argv[1:])
        return

    async def run() -> None:
        from .app import run as run_app

        await run_app(WorkerGatewaySettings())

    def migrate() -> None:
        # migrating needs only the database, not NATS
        upgrade("browserfleet_worker_gateway", _database_url())

    service_main(
        "worker-gateway", run=run, migrate=migrate, argv=argv, preload=("browserfleet_worker_gateway.app",)
    )


if __name__ == "__main__":
    main()
