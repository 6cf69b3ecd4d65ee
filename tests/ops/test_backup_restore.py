"""Backup, restore and the MVP import on the real platform (devstack, real worker and Chromium, a login page on
127.0.0.1 standing in for a customer's site).

Platform A is filled through the API (user, API key, a credential, a profile, a webhook endpoint, a paused
schedule, a task that logs in with the credential and takes a screenshot), backed up with `browserfleet
backup` while it runs, and stopped. Platform B starts on an empty database and a fresh NATS with the same
master keys; `browserfleet restore` runs before its services start (the devstack's `prepare` hook, once its
migrations ran, as an operator restores into a freshly migrated platform). B must then show everything as
A had it, and a new task on B must log in with the restored credential and the restored profile. The MVP
import then runs against B (the module's one running platform).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from browserfleet_contracts import bus
from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.testing import provision
from nats.aio.client import Client as NatsClient

from tests.e2e.sites import TestSite

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BACKUP_KEY = "ops-test-backup-key-4f1c9a"
SITE_USER = "ada"
SITE_PASSWORD = "pw-restore-Zq7!-e2e"
# one pair of master keys for both platforms: the operator keeps them apart from the backup (docs/operations.md)
MASTER_KEYS = {
    "VAULT_MASTER_KEY": base64.b64encode(b"v" * 32).decode(),
    "WEBHOOK_MASTER_KEY": base64.b64encode(b"w" * 32).decode(),
}


def ops_env(platform: Platform, **extra: str) -> dict[str, str]:
    assert platform.database_url and platform.nats_url and platform.secrets
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "DATABASE_URL"))}
    env.update(
        DATABASE_URL=platform.database_url,
        NATS_URL=platform.nats_url,
        NATS_USER=bus.ADMIN,
        NATS_PASSWORD=platform.secrets.passwords[bus.ADMIN],
        BROWSERFLEET_BACKUP_KEY=BACKUP_KEY,
    )
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "browserfleet_sdk.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def login(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    r = http.post("/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json() if r.content else None


def wait_for_task(
    http: httpx.Client, task_id: str, headers: dict[str, str], cap: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + cap  # hang protection, not a speed check
    while True:
        task: dict[str, Any] = ok(http.get(f"/api/v1/tasks/{task_id}", headers=headers))
        if task["status"] in ("completed", "failed", "cancelled", "timed_out"):
            return task
        assert time.monotonic() < deadline, f"task {task_id} did not finish: {task}"
        time.sleep(0.3)


def login_task(site: TestSite) -> dict[str, Any]:
    return {
        "profile": "crm",
        "steps": [
            *site.login_steps("SITE_PASSWORD"),
            {"action": "extract", "name": "welcome", "selector": "#welcome"},
            {"action": "screenshot", "name": "leads"},
        ],
    }


@dataclass
class Filled:
    admin_email: str
    admin_password: str
    api_key: str
    task: dict[str, Any]
    artifacts: list[dict[str, Any]]
    artifact_bytes: dict[str, bytes]
    lists: dict[str, Any]
    backup: str = ""
    archive: Path = field(default_factory=Path)


LISTS = (
    "/api/v1/credentials",
    "/api/v1/profiles",
    "/admin/webhooks",
    "/admin/schedules",
    "/admin/users",
    "/admin/api-keys",
)


def snapshot_lists(http: httpx.Client, auth: dict[str, str]) -> dict[str, Any]:
    found = {path: ok(http.get(path, headers=auth)) for path in LISTS}
    for user in found["/admin/users"]:
        user.pop("last_login", None)  # signing in on B to look is itself a change
    for key in found["/admin/api-keys"]:
        key.pop("last_used_at", None)
    for profile in found["/api/v1/profiles"]:
        profile.pop("in_use", None)
    return found


def fill(platform: Platform, site: TestSite) -> Filled:
    boot = platform.bootstrap
    assert boot is not None and boot.password
    http = httpx.Client(base_url=platform.gateway_url, timeout=30)
    auth = login(http, boot.admin_email, boot.password)
    ok(
        http.post(
            "/api/v1/credentials", headers=auth, json={"name": "SITE_PASSWORD", "value": SITE_PASSWORD}
        ),
        201,
    )
    ok(http.post("/admin/users", headers=auth, json={"email": "grace@acme.test", "role": "user"}), 201)
    key = ok(
        http.post(
            "/admin/api-keys", headers=auth, json={"name": "ci", "scopes": ["tasks:read", "tasks:write"]}
        ),
        201,
    )["key"]
    ok(
        http.post(
            "/admin/webhooks",
            headers=auth,
            # An event this test never causes: a delivery to the dead receiver would stamp `failing_since`
            # on the endpoint at an unknown time, before or after the snapshot below.
            json={"url": "http://127.0.0.1:9/hook", "events": ["credential.deleted"]},
        ),
        201,
    )
    ok(
        http.post(
            "/admin/schedules",
            headers=auth,
            json={"name": "yearly", "cron": "0 0 1 1 *", "task": login_task(site), "paused": True},
        ),
        201,
    )
    created = ok(http.post("/api/v1/tasks", headers=auth, json=login_task(site)), 201)
    task = wait_for_task(http, created["id"], auth)
    assert task["status"] == "completed", task
    listed = ok(http.get(f"/api/v1/tasks/{task['id']}/artifacts", headers=auth))
    artifacts = listed["artifacts"] if isinstance(listed, dict) else listed
    assert any(a["name"] == "leads.png" for a in artifacts), artifacts
    data = {
        a["name"]: http.get(f"/api/v1/tasks/{task['id']}/artifacts/{a['name']}", headers=auth).content
        for a in artifacts
    }
    assert data["leads.png"].startswith(b"\x89PNG")
    lists = snapshot_lists(http, auth)
    assert [p["name"] for p in lists["/api/v1/profiles"]] == ["crm"], "the task saves its profile"
    return Filled(boot.admin_email, boot.password, key, task, artifacts, data, lists)


@pytest.fixture(scope="module")
def site() -> Iterator[TestSite]:
    with TestSite(SITE_USER, SITE_PASSWORD) as s:
        yield s


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """One PostgreSQL server; each platform gets a database of its own on it."""
    with provision("bf_ops") as infra:
        yield infra.database_url


def fresh_database(server_url: str, name: str) -> str:
    base, _, _ = server_url.rpartition("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


@pytest.fixture(scope="module")
def filled(server: str, site: TestSite, tmp_path_factory: pytest.TempPathFactory) -> Filled:
    lines: list[str] = []
    platform = Platform(
        home=tmp_path_factory.mktemp("a"), database_url=server, env=MASTER_KEYS, output=lines.append
    )
    platform.start()
    try:
        state = fill(platform, site)
        state.archive = tmp_path_factory.mktemp("backups") / "platform.bfbackup"
        done = cli(ops_env(platform), "backup", str(state.archive))
        assert done.returncode == 0, done.stderr
        state.backup = done.stdout
    finally:
        platform.stop()
    return state


@dataclass
class Restored:
    platform: Platform
    http: httpx.Client
    restore_output: str


@pytest.fixture(scope="module")
def restored(server: str, filled: Filled, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restored]:
    output: list[str] = []

    async def restore_first(nc: NatsClient) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "browserfleet_sdk.cli", "restore", str(filled.archive),
            env=ops_env(platform), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        output.append(out.decode())

    platform = Platform(
        home=tmp_path_factory.mktemp("b"),
        database_url=fresh_database(server, "bf_ops_restored"),
        env=MASTER_KEYS,
        output=lambda _: None,
        prepare=restore_first,
    )
    platform.start()
    try:
        yield Restored(platform, httpx.Client(base_url=platform.gateway_url, timeout=30), output[0])
    finally:
        platform.stop()


def test_backup_is_encrypted_and_says_what_it_holds(filled: Filled) -> None:
    assert "artifacts: " in filled.backup and "sha256: " in filled.backup
    raw = filled.archive.read_bytes()
    assert raw.startswith(b"BFBACKUP")
    for plain in (b"leads.png", b"grace@acme.test", b"SITE_PASSWORD", filled.api_key[-12:].encode()):
        assert plain not in raw
    assert (filled.archive.stat().st_mode & 0o777) == 0o600


def test_restore_brings_back_everything_as_it_was(restored: Restored, filled: Filled) -> None:
    http = restored.http
    assert restored.platform.bootstrap is not None and not restored.platform.bootstrap.created
    auth = login(http, filled.admin_email, filled.admin_password)
    assert ok(http.get(f"/api/v1/tasks/{filled.task['id']}", headers=auth)) == filled.task
    listed = ok(http.get(f"/api/v1/tasks/{filled.task['id']}/artifacts", headers=auth))
    assert (listed["artifacts"] if isinstance(listed, dict) else listed) == filled.artifacts
    for name, data in filled.artifact_bytes.items():
        r = http.get(f"/api/v1/tasks/{filled.task['id']}/artifacts/{name}", headers=auth)
        assert r.status_code == 200 and r.content == data, name
    assert snapshot_lists(http, auth) == filled.lists
    key = {"Authorization": f"Bearer {filled.api_key}"}
    assert ok(http.get(f"/api/v1/tasks/{filled.task['id']}", headers=key))["id"] == filled.task["id"]


def test_a_restored_credential_and_profile_serve_a_new_task(
    restored: Restored, filled: Filled, site: TestSite
) -> None:
    http = restored.http
    boot_auth = login(http, filled.admin_email, filled.admin_password)
    before = len(site.login_attempts)
    created = ok(http.post("/api/v1/tasks", headers=boot_auth, json=login_task(site)), 201)
    task = wait_for_task(http, created["id"], boot_auth)
    assert task["status"] == "completed", task
    assert task["result"]["extracted"]["welcome"] == "Welcome back"
    assert site.login_attempts[before:] == [True], "the vault released the restored value"


def test_restore_refuses_a_platform_with_data_and_a_wrong_key(restored: Restored, filled: Filled) -> None:
    env = ops_env(restored.platform)
    done = cli(env, "restore", str(filled.archive))
    assert done.returncode != 0 and "not empty" in done.stderr, done.stderr
    wrong = cli(
        {**env, "BROWSERFLEET_BACKUP_KEY": "another-key-of-enough-length"},
        "restore",
        "--force",
        str(filled.archive),
    )
    assert wrong.returncode == 3 and "wrong backup key" in wrong.stderr, wrong.stderr
    # neither touched anything: the task is still there
    http = restored.http
    auth = login(http, filled.admin_email, filled.admin_password)
    assert ok(http.get(f"/api/v1/tasks/{filled.task['id']}", headers=auth))["status"] == "completed"


# --- the MVP import ----------------------------------------------------------------------------------------
SAMPLE = ROOT / "docs" / "mvp-sample"


@pytest.fixture
def mvp_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "mvp"
    shutil.copytree(SAMPLE, folder)
    tasks = json.loads((folder / "tasks.json").read_text())
    tasks.append({"id": "task-bad", "task": "??", "status": "exploded"})
    (folder / "tasks.json").write_text(json.dumps(tasks))
    creds = json.loads((folder / "credentials.json").read_text())
    creds.append({"name": "not a valid name!", "value": "v"})
    (folder / "credentials.json").write_text(json.dumps(creds))
    return folder


def org_state(http: httpx.Client, auth: dict[str, str]) -> dict[str, Any]:
    tasks = ok(http.get("/api/v1/tasks?limit=100", headers=auth))
    items = tasks["items"] if isinstance(tasks, dict) else tasks
    return {
        "tasks": sorted((t["metadata"].get("mvp_id"), t["id"]) for t in items),
        "credentials": sorted(c["name"] for c in ok(http.get("/api/v1/credentials", headers=auth))),
        "invites": sorted(i["id"] for i in ok(http.get("/admin/workers/invites", headers=auth))),
    }


def test_import_mvp_dry_run_then_import_then_nothing_more(
    restored: Restored, filled: Filled, mvp_dir: Path
) -> None:
    env = ops_env(restored.platform)
    http = restored.http
    operator = login(http, filled.admin_email, filled.admin_password)
    orgs_before = ok(http.get("/organizations", headers=operator))

    dry = cli(env, "import-mvp", str(mvp_dir), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would create organization 'Acme Marketing (MVP)'" in dry.stdout
    assert "tasks.json[4] id='task-bad': status: Value error, unknown status 'exploded'" in dry.stdout
    assert "credentials.json[2] name='not a valid name!'" in dry.stdout
    assert "would record task task-1003 (running) as failed" in dry.stdout
    assert "would re-queue task task-1004 (pending)" in dry.stdout
    assert ok(http.get("/organizations", headers=operator)) == orgs_before, "a dry run changes nothing"

    done = cli(env, "import-mvp", str(mvp_dir))
    assert done.returncode == 0, done.stderr
    codes = re.findall(r"^  (.+) \(MVP (worker-\d)\): (\S+)$", done.stdout, re.M)
    assert sorted(c[1] for c in codes) == ["worker-1", "worker-2"], done.stdout
    password = re.search(r"one-time password (\S+)", done.stdout)
    assert password, done.stdout
    auth = login(http, "ops@acme.example", password.group(1))
    state = org_state(http, auth)
    assert [m for m, _ in state["tasks"]] == ["task-1001", "task-1002", "task-1003", "task-1004"]
    assert state["credentials"] == ["SALESFORCE_PASSWORD", "WIKI_API_TOKEN"]
    assert len(state["invites"]) == 2
    tasks = {m: ok(http.get(f"/api/v1/tasks/{tid}", headers=auth)) for m, tid in state["tasks"]}
    assert tasks["task-1001"]["status"] == "completed"
    assert tasks["task-1001"]["result"] == {"output": "Exported 150 leads to CSV"}
    assert tasks["task-1002"]["status"] == "failed"
    assert tasks["task-1002"]["error_message"] == "Timeout waiting for selector .price"
    assert tasks["task-1003"]["status"] == "failed"
    assert "outcome was never recorded" in tasks["task-1003"]["error_message"]
    assert tasks["task-1004"]["kind"] == "agent" and tasks["task-1004"]["metadata"]["mvp_id"] == "task-1004"
    logs = ok(http.get(f"/admin/tasks/{tasks['task-1001']['id']}/logs", headers=auth))
    assert [line["message"] for line in logs["items"]] == ["navigating to login page", "export finished"]
    # encrypted on the way in: the vault's rows never hold the value
    assert restored.platform.database_url
    with psycopg.connect(restored.platform.database_url) as conn:
        dump = str(conn.execute("SELECT array_agg(c::text) FROM vault.credentials c").fetchone())
    assert "correct-horse-battery-staple" not in dump and "SALESFORCE_PASSWORD" in dump

    again = cli(env, "import-mvp", str(mvp_dir))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("done: 0, already imported: 9"), again.stdout
    assert org_state(http, auth) == state
