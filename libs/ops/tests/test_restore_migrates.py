"""Restoring an archive made at an older migration revision: the scheduler's schema is left at 0001 in the
source database (the first release's tasks table, with a task in it), backed up, and restored into an empty
database by this code, whose scheduler is newer. The task must come back under the current schema, migrated
by the scheduler's own `migrate` command. An archive at a revision this code does not know is refused before
the target is touched."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from browserfleet_core import migrations
from browserfleet_devkit.testing import Infra
from browserfleet_ops.services import BY_SCHEMA, SERVICES

KEY = "migration-test-backup-key"
OLD = "0001"


def new_database(infra: Infra) -> str:
    base, _, _ = infra.database_url.rpartition("/")
    name = f"ops_{secrets.token_hex(4)}"
    with psycopg.connect(infra.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def cli(database_url: str, nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env.update(DATABASE_URL=database_url, NATS_URL=nats_url, BROWSERFLEET_BACKUP_KEY=KEY)
    return subprocess.run(
        [sys.executable, "-m", "browserfleet_ops.cli", *args], env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def old_platform(infra: Infra) -> str:
    url = new_database(infra)
    for service in SERVICES:
        migrations.upgrade(service.package, url, OLD if service.schema == "scheduler" else "head")
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO scheduler.tasks (id, org_id, title, kind, status, priority, worker_tags, spec, secret_names,"
            " timeout_seconds, max_attempts, attempt, artifacts, metadata, created_at, updated_at, completed_at)"
            " VALUES ('t-old', 'org-1', 'from the first release', 'steps', 'completed', 'normal', '[]',"
            " '{\"kind\": \"steps\", \"steps\": []}', '[]', 60, 1, 1, '[]', '{}', now(), now(), now())"
        )
        conn.execute(
            "INSERT INTO scheduler.task_attempts (task_id, attempt, status) VALUES ('t-old', 1, 'completed')"
        )
    return url


def test_an_older_archive_is_migrated_on_restore(infra: Infra, old_platform: str, tmp_path: Path) -> None:
    archive = tmp_path / "old.bfbackup"
    made = cli(old_platform, infra.nats_url, "backup", str(archive))
    assert made.returncode == 0, made.stderr
    assert f"scheduler @ {OLD}" in made.stdout

    target = new_database(infra)
    done = cli(target, infra.nats_url, "restore", str(archive), "--force")
    assert done.returncode == 0, done.stderr
    head = BY_SCHEMA["scheduler"].head()
    assert f"migrated scheduler: {OLD} -> {head}" in done.stdout
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT version_num FROM scheduler.alembic_version").fetchone() == (head,)
        row = conn.execute(
            "SELECT title, status, pool, schedule_id FROM scheduler.tasks WHERE id = 't-old'"
        ).fetchone()
        assert row == ("from the first release", "completed", None, None)
        attempt = conn.execute("SELECT attempt, delivery FROM scheduler.task_attempts").fetchone()
        assert attempt == (1, None)
        # the identity sequence carries on after the restored rows
        conn.execute(
            "INSERT INTO scheduler.task_attempts (task_id, attempt, status) VALUES ('t-old', 2, 'queued')"
        )


def test_an_archive_from_a_newer_platform_is_refused_untouched(
    infra: Infra, old_platform: str, tmp_path: Path
) -> None:
    future = new_database(infra)
    for service in SERVICES:
        migrations.upgrade(service.package, future, "head")
    with psycopg.connect(future) as conn:
        conn.execute("UPDATE scheduler.alembic_version SET version_num = '9999_future'")
    archive = tmp_path / "future.bfbackup"
    assert cli(future, infra.nats_url, "backup", str(archive)).returncode == 0

    done = cli(old_platform, infra.nats_url, "restore", str(archive), "--force")
    assert done.returncode == 3, done.stdout
    assert "revision 9999_future, which this code does not know" in done.stderr
    with psycopg.connect(old_platform) as conn:
        assert conn.execute("SELECT version_num FROM scheduler.alembic_version").fetchone() == (OLD,)
        assert conn.execute("SELECT count(*) FROM scheduler.tasks").fetchone() == (1,)
