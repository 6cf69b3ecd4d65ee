"""`browserfleet-webhooks [run|migrate]`."""

from __future__ import annotations

from browserfleet_core.migrations import upgrade
from browserfleet_core.runner import service_main

from .app import run
from .settings import WebhooksSettings


def migrate() -> None:
    settings = WebhooksSettings()
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is required to migrate the webhooks schema")
    upgrade("browserfleet_webhooks", settings.database_url)


def main() -> None:
    service_main("webhooks", run=run, migrate=migrate)


if __name__ == "__main__":
    main()
