"""The services that keep a schema in PostgreSQL, and their migrations, reached without importing them: the
migration history is read from the package's files (found, not imported), and migrations run as each
service's own command in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from alembic.script import ScriptDirectory


@dataclass(frozen=True)
class DbService:
    name: str
    schema: str

    @property
    def package(self) -> str:
        return "browserfleet_" + self.name.replace("-", "_")

    def migrations_dir(self) -> Path:
        spec = importlib.util.find_spec(self.package)  # a top-level package: located, not executed
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"{self.package} is not installed: install the platform's packages with ops")
        return Path(next(iter(spec.submodule_search_locations))) / "migrations"

    def script(self) -> ScriptDirectory:
        return ScriptDirectory(str(self.migrations_dir()))

    def head(self) -> str:
        head = self.script().get_current_head()
        assert head is not None, f"{self.name} has no migrations"
        return head

    def knows(self, revision: str) -> bool:
        return any(rev.revision == revision for rev in self.script().walk_revisions())


# every schema a service owns (its models' SCHEMA); libs/ops/tests checks this against the services
SERVICES: tuple[DbService, ...] = (
    DbService("auth", "auth"),
    DbService("scheduler", "scheduler"),
    DbService("vault", "vault"),
    DbService("webhooks", "webhooks"),
    DbService("worker-gateway", "workers"),
)
BY_SCHEMA = {s.schema: s for s in SERVICES}


def _run(argv: list[str], database_url: str, what: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}): " + " | ".join(tail))


def migrate_to(service: DbService, revision: str, database_url: str) -> None:
    """The service's schema at `revision` (the archive's), through core's migration runner."""
    _run(
        [
            sys.executable,
            "-m",
            "browserfleet_core.migrations",
            "upgrade",
            service.package,
            "--revision",
            revision,
        ],
        database_url,
        f"creating the {service.schema} schema at revision {revision}",
    )


def migrate_head(service: DbService, database_url: str) -> None:
    """The service's own `migrate` command, as its deployment runs it."""
    _run([sys.executable, "-m", service.package, "migrate"], database_url, f"migrating {service.name}")
