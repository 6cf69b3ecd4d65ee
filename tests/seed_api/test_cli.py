"""The `browserfleet` CLI (and through it the SDK) against the whole platform (tests/seed_api/conftest.py),
run as a user runs it: a subprocess with BROWSERFLEET_URL and BROWSERFLEET_API_KEY (or BROWSERFLEET_TOKEN) in
its environment, `--json` parsed. A steps task runs on the platform's real Chromium worker against a site on
127.0.0.1; webhooks go to a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Running

pytestmark = pytest.mark.e2e

WAIT_CAP = 120.0  # hang protection only
SCOPES = ["tasks:read", "tasks:write", "credentials:write", "webhooks:admin", "workers:admin"]


def _exe() -> list[str]:
    script = Path(sys.executable).parent / "browserfleet"
    return [str(script)] if script.exists() else [sys.executable, "-m", "browserfleet_sdk.cli"]


class Cli:
    def __init__(self, running: Running) -> None:
        self.running = running
        self.token = running.admin_login()["access_token"]
        made = httpx.post(
            f"{running.url}/admin/api-keys",
            headers={"Authorization": f"Bearer {self.token}"},
            json={"name": "cli", "scopes": SCOPES},
            timeout=30,
        )
        assert made.status_code == 201, made.text
        self.key = made.json()["key"]

    def run(
        self, *args: str, as_user: bool = False, ok: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROWSERFLEET_")}
        env["BROWSERFLEET_URL"] = self.running.url
        env["BROWSERFLEET_TOKEN" if as_user else "BROWSERFLEET_API_KEY"] = self.token if as_user else self.key
        done = subprocess.run(
            [*_exe(), *args], env=env, capture_output=True, text=True, timeout=WAIT_CAP, input=stdin
        )
        if ok:
            assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str, as_user: bool = False) -> Any:
        return json.loads(self.run(*args, "--json", as_user=as_user).stdout)


@pytest.fixture(scope="module")
def cli(running: Running) -> Cli:
    return Cli(running)


def test_help_lists_the_commands() -> None:
    out = subprocess.run([*_exe(), "--help"], capture_output=True, text=True, timeout=60).stdout
    for command in ("tasks", "credentials", "webhooks", "workers", "api-keys", "up"):
        assert command in out, out


def test_a_task_submitted_waited_for_logged_and_its_artifact_downloaded(cli: Cli, tmp_path: Path) -> None:
    site = cli.running.site.url
    steps = [
        {"action": "navigate", "url": site},
        {"action": "extract", "name": "price", "selector": "#price"},
        {"action": "screenshot", "name": "page"},
    ]
    done = cli.run(
        "tasks", "submit", *(a for s in steps for a in ("--step", json.dumps(s))), "--wait", "--json"
    )
    task = json.loads(done.stdout)
    assert task["status"] == "completed", task
    assert task["result"]["extracted"]["price"] == "42.00"
    assert "completed" in done.stderr, "the wait shows progress on stderr"
    # get, list (JSON and the people's table)
    assert cli.json("tasks", "get", task["id"])["id"] == task["id"]
    assert task["id"] in {t["id"] for t in cli.json("tasks", "list", "--limit", "100")}
    table = cli.run("tasks", "list").stdout.splitlines()
    assert table[0].split()[:2] == ["ID", "STATUS"] and any(task["id"] in row for row in table[1:])
    # logs: followed over SSE, ending by itself when the task is finished
    followed = [
        json.loads(line)
        for line in cli.run("tasks", "logs", task["id"], "--follow", "--json").stdout.splitlines()
    ]
    assert followed and all("message" in line for line in followed)
    assert [line["id"] for line in followed] == sorted({line["id"] for line in followed}), "no line twice"
    # artifacts
    names = {a["name"] for a in cli.json("tasks", "artifacts", task["id"])}
    shot = next(n for n in names if n.startswith("page"))
    target = tmp_path / "shot.png"
    saved = cli.json("tasks", "download", task["id"], shot, "-o", str(target))
    assert saved["size"] == target.stat().st_size > 0
    assert target.read_bytes().startswith(b"\x89PNG")


def test_cancel_and_errors(cli: Cli) -> None:
    queued = cli.json("tasks", "submit", "--goal", "wait for nobody", "--tag", "nobody-has-this")
    assert cli.json("tasks", "cancel", queued["id"], "--reason", "cli test")["status"] == "cancelled"
    again = cli.run("tasks", "cancel", queued["id"], ok=False)
    assert again.returncode == 1 and "409" in again.stderr
    missing = cli.run("tasks", "get", "00000000-0000-0000-0000-000000000000", ok=False)
    assert missing.returncode == 1 and "404" in missing.stderr
    bad = cli.run("tasks", "submit", "--goal", "x", "--timeout", "0", ok=False)
    assert bad.returncode == 1 and "timeout_seconds" in bad.stderr, bad.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROWSERFLEET_")}
    unset = subprocess.run([*_exe(), "tasks", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert unset.returncode == 2 and "BROWSERFLEET_URL" in unset.stderr


def test_credentials(cli: Cli) -> None:
    made = cli.json("credentials", "set", "CLI_SECRET", "--value", "v1")
    assert made["name"] == "CLI_SECRET" and "v1" not in json.dumps(made)
    from_stdin = cli.run("credentials", "set", "CLI_PIPED", "--json", stdin="piped-value\n")
    assert json.loads(from_stdin.stdout)["name"] == "CLI_PIPED"
    changed = cli.json("credentials", "update", made["id"], "--value", "v2", "--description", "rotated")
    assert (changed["id"], changed["description"]) == (made["id"], "rotated")
    listed = cli.json("credentials", "list")
    assert {"CLI_SECRET", "CLI_PIPED"} <= {c["name"] for c in listed}
    assert "v2" not in json.dumps(listed)
    for name in ("CLI_SECRET", "CLI_PIPED"):
        cli.run("credentials", "delete", name)
    assert not {"CLI_SECRET", "CLI_PIPED"} & {c["name"] for c in cli.json("credentials", "list")}


def test_webhooks_with_a_replay(cli: Cli) -> None:
    receiver = cli.running.receiver
    endpoint = cli.json("webhooks", "create", receiver.url + "/cli", "--event", "webhook.test")
    assert endpoint["secret"].startswith("whsec_")
    assert cli.json("webhooks", "get", endpoint["id"])["id"] == endpoint["id"]
    cli.json("webhooks", "test", endpoint["id"])
    deadline = time.monotonic() + WAIT_CAP
    while not (delivered := cli.json("webhooks", "deliveries", "--endpoint", endpoint["id"])):
        assert time.monotonic() < deadline, "the test event was never delivered"
        time.sleep(0.5)
    before = len(receiver.received)
    cli.json("webhooks", "replay", delivered[0]["id"])
    while len(receiver.received) <= before:
        assert time.monotonic() < deadline, "the replay never arrived"
        time.sleep(0.3)
    detail = cli.json("webhooks", "delivery", delivered[0]["id"])
    assert detail["id"] == delivered[0]["id"]
    job = cli.json("webhooks", "replay-failed", endpoint["id"], "--since", "2020-01-01T00:00:00Z")
    assert cli.json("webhooks", "replay-job", job["id"])["id"] == job["id"]
    assert (
        cli.json("webhooks", "update", endpoint["id"], "--description", "from the cli")["description"]
        == "from the cli"
    )
    cli.run("webhooks", "delete", endpoint["id"])
    assert endpoint["id"] not in {e["id"] for e in cli.json("webhooks", "list")}


def test_workers_invite_drain_revoke(cli: Cli) -> None:
    invite = cli.json(
        "workers", "invite", "--name", "cli-worker", "--capability", "cli-only", "--pool", "cli"
    )
    registered = httpx.post(
        f"{cli.running.url}/workers/register",
        json={"invite_code": invite["invite_code"], "device_info": {"hostname": "cli-box"}},
    )
    assert registered.status_code == 201, registered.text
    worker_id = registered.json()["worker_id"]

    def beat() -> None:  # what a live worker does; silent for 15 s it would be offline, and not drainable
        online = httpx.put(
            f"{cli.running.url}/workers/{worker_id}/status",
            headers={"Authorization": f"Bearer {registered.json()['api_key']}"},
            json={"status": "online"},
        )
        assert online.status_code == 200, online.text

    beat()
    assert worker_id in {w["id"] for w in cli.json("workers", "list")}
    assert "cli-worker" in cli.run("workers", "list").stdout
    beat()  # two CLI processes can take longer than the silence allowed on a loaded machine
    assert cli.json("workers", "drain", worker_id)["status"] == "draining"
    cli.run("workers", "revoke", worker_id)
    assert worker_id not in {w["id"] for w in cli.json("workers", "list")}


def test_api_keys_with_a_users_token(cli: Cli) -> None:
    made = cli.json("api-keys", "create", "from-cli", "--scope", "tasks:read", as_user=True)
    assert made["key"].startswith("sk_api_")
    assert made["id"] in {k["id"] for k in cli.json("api-keys", "list", as_user=True)}
    cli.run("api-keys", "revoke", made["id"], as_user=True)
    revoked = httpx.get(f"{cli.running.url}/api/v1/tasks", headers={"Authorization": f"Bearer {made['key']}"})
    assert revoked.status_code == 401
    # an API key may not make keys: the answer says so, and the CLI exits 1
    refused = cli.run("api-keys", "list", ok=False)
    assert refused.returncode == 1 and "403" in refused.stderr


async def test_the_async_client_follows_the_same_lines(cli: Cli) -> None:
    from browserfleet_sdk.client import AsyncBrowserfleetClient, BrowserfleetClient

    step = {"action": "navigate", "url": cli.running.site.url}
    with BrowserfleetClient(cli.running.url, cli.key) as sync:
        task = sync.wait_for_task(sync.create_task(steps=[step])["id"], timeout=WAIT_CAP)
        assert task["status"] == "completed", task
        expected = [line["id"] for line in sync.follow_logs(task["id"])]
    async with AsyncBrowserfleetClient(cli.running.url, cli.key) as client:
        followed = [line["id"] async for line in client.follow_logs(task["id"])]
        assert followed == expected and followed
        assert (await client.list_artifacts(task["id"])) == []
