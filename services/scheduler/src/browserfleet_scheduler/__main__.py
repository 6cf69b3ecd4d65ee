"""`browserfleet-scheduler [run|migrate]`."""

from __future__ import annotations

from browserfleet_core.runner import service_main

from .app import migrate, run
from .settings import SchedulerSettings


def _migrate() -> None:
    migrate(SchedulerSettings())  # NATS_URL comes from the environment


def main() -> None:
    service_main("scheduler", run=run, migrate=_migrate)


if __name__ == "__main__":
    main()
