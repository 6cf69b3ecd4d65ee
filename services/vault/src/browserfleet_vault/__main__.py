"""`browserfleet-vault [run|migrate]`."""

from __future__ import annotations

import os
import sys

from browserfleet_core.migrations import upgrade
from browserfleet_core.runner import service_main
from pydantic import ValidationError

from .settings import VaultSettings


def load_settings() -> VaultSettings:
    """Settings, or a clear exit: the message names the variable and never echoes a key's value."""
    try:
        return VaultSettings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            name = ".".join(str(p) for p in error["loc"]).upper() or "settings"
            message = (
                "is required"
                if error["type"] == "missing"
                else str(error["msg"]).removeprefix("Value error, ")
            )
            lines.append(f"  {name}: {message}")
        print("browserfleet-vault: invalid configuration\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    async def run() -> None:
        from .app import run as run_app

        await run_app(load_settings())

    def migrate() -> None:
        # migrating needs only the database: no master key, no NATS
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            raise SystemExit("browserfleet-vault: DATABASE_URL is required")
        upgrade("browserfleet_vault", database_url)

    service_main("vault", run=run, migrate=migrate, argv=argv, preload=("browserfleet_vault.app",))


if __name__ == "__main__":
    main()
