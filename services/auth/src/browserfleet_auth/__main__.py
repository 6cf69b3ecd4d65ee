"""`browserfleet-auth [run|migrate|bootstrap]` (bootstrap: the first organization and admin, `bootstrap.py`)."""

from __future__ import annotations

import logging
import os
import sys

from browserfleet_core import health as observability_health
from browserfleet_core import migrations, observability
from browserfleet_core.runner import service_main, wait_for_shutdown

from .app import build
from .settings import AuthSettings

log = logging.getLogger("browserfleet.auth")


def migrate() -> None:
    # NATS_URL and DATABASE_URL come from the environment
    settings = AuthSettings()
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is required to migrate auth")
    migrations.upgrade("browserfleet_auth", settings.database_url)


async def run() -> None:
    settings = AuthSettings()
    observability.setup(settings)
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is required to run auth")
    app = build(settings)
    if app.health is not None:
        observability_health.install(app.health)  # the metrics port answers /health/ready with its checks
    await app.start()
    log.info("auth serving on %s", settings.nats_url)
    try:
        await wait_for_shutdown()
    finally:
        await app.stop()


def main() -> None:
    if sys.argv[1:] == ["bootstrap"]:
        from . import bootstrap

        bootstrap.main(os.environ)
        return
    service_main("auth", run=run, migrate=migrate)


if __name__ == "__main__":
    main()
