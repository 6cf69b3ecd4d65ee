"""`browserfleet-worker run` / `python -m browserfleet_worker`."""

from __future__ import annotations

from browserfleet_core.runner import service_main

from .app import main as run_worker


def main() -> None:
    service_main("worker", run=run_worker)


if __name__ == "__main__":
    main()
