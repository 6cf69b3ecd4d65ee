"""`browserfleet-worker-gateway [run|migrate]`."""

from __future__ import annotations

import os

from browserfleet_core.migrations import upgrade
from browserfleet_core.runner import service_main

from .settings import WorkerGatewaySettings


def main(argv: list[str] | None = None) -> None:
    async def run() -> None:
        from .app import run as run_app

        await run_app(WorkerGatewaySettings())

    def migrate() -> None:
        # migrating needs only the database, not NATS
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            raise SystemExit("browserfleet-worker-gateway: DATABASE_URL is required")
        upgrade("browserfleet_worker_gateway", database_url)

    service_main("worker-gateway", run=run, migrate=migrate, argv=argv)


if __name__ == "__main__":
    main()
