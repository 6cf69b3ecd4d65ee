"""Remote workers over WebSocket (issue 11 item 4; docs/websocket.md "Remote workers"), against the whole
platform of tests/seed_api/conftest.py (real NATS, PostgreSQL, every service, the gateway's /workers/ws
proxied to worker-gateway's bridge).

The remote worker is the real worker, run as the README says (`browserfleet-worker --gateway URL --invite
CODE`), with no NATS address and nothing of the platform's in its environment, and real Chromium. Between it
and the gateway sits `Cutter`, a TCP forwarder on 127.0.0.1 that stands in for the network (a laptop's
Wi-Fi): `cut()` drops every connection at once. Hostile and forged frames come from a raw WebSocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from browserfleet_contracts import subjects
from browserfleet_contracts.worker_socket import MAX_FRAME_BYTES, PATH, SocketCloseCode
from browserfleet_core.streams import ensure_pool_consumers
from browserfleet_devkit.processes import stop_process
from websockets.exceptions import ConnectionClosed

from ..e2e.sites import TestSite
from .conftest import Running

pytestmark = pytest.mark.e2e

WAIT_CAP = 120.0  # hang protection only; nothing asserts on speed
POOL = "remote"  # the remote workers' own pool: the platform's in-cluster worker never takes these tasks
TAG = "laptop"
LEASE_SECONDS = 6.0  # the pool consumers' ack_wait in this test (the platform's is 30 s)
SECRET = "p@ss w0rd/remote+&=1"  # the site stand-in has no charset: ASCII only
SITE_USER = "remote-user"


# --- stand-ins and processes ------------------------------------------------------------------------
class Cutter:
    """Stands in for the network between a remote worker and the gateway, on 127.0.0.1: forwards TCP to the
    gateway; `cut()` drops every open connection at once (the worker then reconnects through it)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            dropped, self.open = self.open, []
        for s in dropped:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def _worker_exe() -> list[str]:
    script = Path(sys.executable).parent / "browserfleet-worker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "browserfleet_worker"]


def readme_command(url: str, invite: str) -> list[str]:
    """The README's one command ("Run a worker on your own machine"), with this platform's URL and invite."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Run a worker on your own machine", 1)[1].split("\n## ", 1)[0]
    line = next(ln for ln in section.splitlines() if ln.startswith("uv run browserfleet-worker "))
    args = shlex.split(line)[3:]  # after `uv run browserfleet-worker`
    assert args[0::2] == ["--gateway", "--invite"], line
    return [*_worker_exe(), "--gateway", url, "--invite", invite]


class RemoteWorker:
    """The real worker on "another machine": its own state folder, no NATS_URL, the platform's URL only."""

    def __init__(self, url: str, invite: str, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.log = folder / "worker.log"
        folder.mkdir(parents=True, exist_ok=True)
        keep = ("PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV", "PLAYWRIGHT_BROWSERS_PATH")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="INFO",
            BROWSER_ALLOW_NETWORKS="127.0.0.1/32",  # the test sites are on this machine
            LEASE_EXTEND_SECONDS="1",  # well inside this test's lease
            HEARTBEAT_SECONDS="1",
            SHUTDOWN_GRACE_SECONDS="5",
        )
        with self.log.open("wb") as out:
            # the README's command
            self.proc = subprocess.Popen(
                [
                    *readme_command(url, invite),
                    "--state-dir",
                    str(folder / "state"),
                    "--name",
                    name,
                    "--slots",
                    "1",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, marker: str, count: int = 1) -> None:
        deadline = time.monotonic() + WAIT_CAP
        while self.text().count(marker) < count:
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.text()[-4000:]}"
            assert time.monotonic() < deadline, f"{self.name}: no {marker!r}:\n{self.text()[-4000:]}"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, 30, sig)


# --- the platform, seen as an admin -----------------------------------------------------------------
class Admin:
    def __init__(self, running: Running) -> None:
        self.running = running
        login = running.admin_login()
        self.http = httpx.Client(
            base_url=running.url, headers={"Authorization": f"Bearer {login['access_token']}"}, timeout=30
        )

    def invite(self, name: str) -> dict[str, Any]:
        r = self.http.post(
            "/admin/workers/invite",
            json={"name": name, "capabilities": [TAG], "pool": POOL, "multi_use": True},
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def submit(self, steps: list[dict[str, Any]]) -> str:
        r = self.http.post("/api/v1/tasks", json={"steps": steps, "worker_tags": [TAG]})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        r = self.http.get(f"/admin/tasks/{task_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def wait(self, task_id: str, *states: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_CAP
        while True:
            task = self.task(task_id)
            if task["status"] in states:
                return task
            assert time.monotonic() < deadline, f"task never reached {states}: {task}"
            time.sleep(0.2)

    def worker(self, worker_id: str) -> dict[str, Any]:
        r = self.http.get("/admin/workers")
        assert r.status_code == 200, r.text
        return next(w for w in r.json() if w["id"] == worker_id)


@pytest.fixture(scope="module")
def admin(running: Running) -> Iterator[Admin]:
    a = Admin(running)
    yield a
    a.http.close()


@pytest.fixture(scope="module")
def invite(admin: Admin, running: Running) -> str:
    made = admin.invite("remote laptops")
    code, org_id = str(made["invite_code"]), str(made["org_id"])
    # a short lease for this pool, so a lapse is seen in seconds: made before any worker registers (worker-
    # gateway keeps consumers that exist); the pool is the admin's organization's own

    async def short_lease() -> None:
        nc = await running.platform.connect_admin("remote-worker-test")
        try:
            await ensure_pool_consumers(
                nc.jetstream(), subjects.pool_key(POOL, org_id), ack_wait=LEASE_SECONDS
            )
        finally:
            await nc.close()

    asyncio.run(short_lease())
    return code


@pytest.fixture(scope="module")
def cutter(running: Running) -> Iterator[Cutter]:
    c = Cutter(running.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def laptop(cutter: Cutter, invite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteWorker]:
    w = RemoteWorker(cutter.url, invite, tmp_path_factory.mktemp("laptop"), "laptop-1")
    try:
        w.wait_for("connected to ")
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def credential(admin: Admin) -> str:
    made = admin.http.post(
        "/admin/credentials", json={"name": "REMOTE_PW", "value": SECRET, "type": "password"}
    )
    assert made.status_code == 201, made.text
    return "REMOTE_PW"


def _login_steps(site: TestSite, credential: str, pause: float = 0) -> list[dict[str, Any]]:
    """The TestSite's login with the vault's secret (`pause` seconds before submitting), then a screenshot."""
    return [*site.login_steps(credential, pause), {"action": "screenshot", "name": "leads"}]


def _slow_steps(site: str, seconds: float) -> list[dict[str, Any]]:
    return [
        {"action": "navigate", "url": site},
        {"action": "wait_for", "delay_ms": int(seconds * 1000)},
        {"action": "extract", "name": "price", "selector": "#price"},
    ]


# --- the tests ----------------------------------------------------------------------------------------
async def _stored_update_kinds(running: Running, worker_id: str, task_id: str) -> list[str]:
    """The kinds of what TASK_UPDATES holds for the task from the worker (it keeps messages for a while)."""
    nc = await running.platform.connect_admin("remote-worker-updates")
    try:
        sub = await nc.jetstream().pull_subscribe(
            subjects.task_update(worker_id, task_id), stream=subjects.TASK_UPDATES_STREAM
        )
        kinds: list[str] = []
        with contextlib.suppress(TimeoutError):
            while True:
                kinds += [json.loads(m.data)["kind"] for m in await sub.fetch(100, timeout=2)]
        return kinds
    finally:
        await nc.close()


def test_a_remote_worker_joins_with_an_invite_and_runs_a_task_with_a_vault_secret(
    laptop: RemoteWorker, admin: Admin, credential: str, running: Running
) -> None:
    saved = laptop.folder / "state" / "worker.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    identity = json.loads(saved.read_text())
    assert identity["worker_key"].startswith("sk_worker_")
    with TestSite(SITE_USER, SECRET) as site:
        task_id = admin.submit(_login_steps(site, credential))
        task = admin.wait(task_id, "completed", "failed", "cancelled", "timed_out")
        assert task["status"] == "completed", task
        assert site.login_attempts == [True], task  # the secret reached the site, through the sealed release
    assert task["worker_id"] == identity["worker_id"]
    # the bridge answers STARTED and stores nothing for it (the claim made the task running); the rest is stored
    kinds = asyncio.run(_stored_update_kinds(running, identity["worker_id"], task_id))
    assert "result" in kinds and "started" not in kinds, kinds
    artifacts = admin.http.get(f"/api/v1/tasks/{task_id}/artifacts")
    assert artifacts.status_code == 200, artifacts.text
    names = [a["name"] for a in artifacts.json()]
    assert any(n.startswith("leads") for n in names), names
    shot = next(a for a in artifacts.json() if a["name"].startswith("leads"))
    got = admin.http.get(f"/api/v1/tasks/{task_id}/artifacts/{shot['name']}")
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG"), got.status_code
    assert SECRET not in laptop.text()
    seen = admin.worker(identity["worker_id"])
    assert seen["device_info"]["hostname"] == socket.gethostname()


def test_a_dropped_socket_that_comes_back_within_the_lease_keeps_the_task(
    laptop: RemoteWorker, admin: Admin, cutter: Cutter, credential: str
) -> None:
    before = laptop.text().count("connected to ")
    with TestSite(SITE_USER, SECRET) as site:
        # the vault's secret is typed; the socket drops during a pause longer than the lease, which lives on
        # only if the worker comes back with it
        task_id = admin.submit(_login_steps(site, credential, pause=LEASE_SECONDS + 2))
        admin.wait(task_id, "running")
        laptop.wait_for(f"running {task_id}#1")
        cutter.cut()
        laptop.wait_for("connected to ", before + 1)
        assert "1 task(s) resumed, 0 lost" in laptop.text()
        task = admin.wait(task_id, "completed", "failed", "cancelled", "timed_out")
        assert task["status"] == "completed", task
        assert site.login_attempts == [True], task
    assert task["attempt"] == 1 and task["worker_id"] == _worker_id(laptop), task
    assert [a["name"].split(".")[0] for a in task["artifacts"]] == ["leads"], task


def test_a_forged_update_for_a_task_the_worker_does_not_hold_changes_nothing(
    laptop: RemoteWorker, admin: Admin, running: Running
) -> None:
    # another worker's identity, its own socket: it tries to finish laptop-1's task
    rogue = _register(running, admin, "rogue")
    task_id = admin.submit(_slow_steps(running.site.url, 3))
    admin.wait(task_id, "running")

    async def forge() -> list[dict[str, Any]]:
        async with _connect(running, rogue["worker_key"], slots=0) as ws:
            answers = []
            for i, frame in enumerate(
                [
                    {"type": "STARTED", "task_id": task_id, "attempt": 1},
                    {
                        "type": "RESULT",
                        "task_id": task_id,
                        "attempt": 1,
                        "status": "failed",
                        "error_message": "forged",
                    },
                    {"type": "HAND_BACK", "task_id": task_id, "attempt": 1},
                ],
                start=1,
            ):
                await ws.send(json.dumps({**frame, "id": i}))
                answers.append(json.loads(await ws.recv()))
            return answers

    answers = asyncio.run(forge())
    assert [a["type"] for a in answers] == ["ERROR"] * 3, answers
    assert {a["code"] for a in answers} == {"task_not_held"}, answers
    task = admin.wait(task_id, "completed", "failed", "cancelled", "timed_out")
    assert task["status"] == "completed" and task["error_message"] is None, task
    assert task["worker_id"] != rogue["worker_id"]


def test_a_bad_key_is_refused_with_4401_and_the_reason(running: Running) -> None:
    async def try_keys() -> list[tuple[int | None, dict[str, Any]]]:
        seen = []
        for key in ("sk_worker_not-a-real-key-0123456789", "not even a key"):
            async with websockets.connect(_ws_url(running)) as ws:
                await ws.send(json.dumps({"type": "WORKER_CONNECT", "api_key": key}))
                error = json.loads(await ws.recv())
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                seen.append((ws.close_code, error))
        return seen

    for code, error in asyncio.run(try_keys()):
        assert code == SocketCloseCode.UNAUTHORIZED
        assert error["type"] == "ERROR" and error["field"] == "api_key" and error["message"], error


def test_hostile_frames_get_errors_then_a_close_and_nothing_breaks(running: Running, admin: Admin) -> None:
    worker = _register(running, admin, "hostile")

    async def abuse() -> tuple[list[dict[str, Any]], int | None, int | None]:
        answers: list[dict[str, Any]] = []
        async with _connect(running, worker["worker_key"], slots=0) as ws:
            for frame in (
                "{not json",
                json.dumps({"type": "NO_SUCH_TYPE", "id": 1}),
                json.dumps([1, 2, 3]),
                json.dumps({"type": "LOG", "id": 2, "task_id": "x", "attempt": 1, "first": 0, "lines": []}),
                json.dumps({"type": "REQUEST", "id": 3, "endpoint": "svc.auth.create_api_key", "body": {}}),
                json.dumps({"type": "HEARTBEAT", "id": 4, "pad": "x" * (MAX_FRAME_BYTES + 10)}),
                b"\x00garbage",
                json.dumps({"type": "WORKER_CONNECT", "api_key": worker["worker_key"]}),
            ):
                await ws.send(frame)
                answers.append(json.loads(await ws.recv()))
            # still serving: a heartbeat is answered
            await ws.send(json.dumps({"type": "HEARTBEAT", "id": 9}))
            answers.append(json.loads(await ws.recv()))
            # a flood of bad frames closes the socket (4429)
            await _until_closed(ws, "{")
            abuse_code = ws.close_code
        # a frame beyond the socket's limit ends it at once (1009)
        async with _connect(running, worker["worker_key"], slots=0) as ws:
            await _until_closed(ws, "x" * (4 * MAX_FRAME_BYTES + 1))
            big_code = ws.close_code
        return answers, abuse_code, big_code

    answers, abuse_code, big_code = asyncio.run(abuse())
    codes = [a.get("code") if a["type"] == "ERROR" else a["type"] for a in answers]
    assert codes == [
        "malformed_frame",
        "unknown_type",
        "unknown_type",
        "invalid_frame",
        "endpoint_not_allowed",
        "frame_too_large",
        "malformed_frame",
        "out_of_order",
        "REPLY",
    ], answers
    assert abuse_code == SocketCloseCode.ABUSE
    assert big_code == SocketCloseCode.MESSAGE_TOO_BIG
    assert running.platform.processes and all(p.alive() for p in running.platform.processes)


def test_a_request_its_safe_browsing_blocks_becomes_a_security_event(
    laptop: RemoteWorker, admin: Admin, running: Running
) -> None:
    r = admin.http.post(
        "/api/v1/tasks",
        json={
            "steps": [{"action": "navigate", "url": running.site.url}],
            "worker_tags": [TAG],
            "allowed_domains": ["example.com"],  # the site on 127.0.0.1 is not one of them
        },
    )
    assert r.status_code == 201, r.text
    task = admin.wait(r.json()["id"], "completed", "failed", "cancelled", "timed_out")
    assert task["status"] == "failed" and task["worker_id"] == _worker_id(laptop), task

    async def blocked() -> list[dict[str, Any]]:
        # the worker's SECURITY frame became the organization's security.request_blocked event
        nc = await running.platform.connect_admin("remote-worker-events")
        try:
            sub = await nc.jetstream().pull_subscribe(
                subjects.event(task["org_id"], "security.request_blocked"), stream=subjects.EVENTS_STREAM
            )
            found: list[dict[str, Any]] = []
            deadline = time.monotonic() + WAIT_CAP
            while not found:
                assert time.monotonic() < deadline, "no security.request_blocked event for the task"
                with contextlib.suppress(TimeoutError):
                    for msg in await sub.fetch(100, timeout=1):
                        event = json.loads(msg.data)
                        if task["id"] in msg.data.decode():
                            found.append(event)
            return found
        finally:
            await nc.close()

    events = asyncio.run(blocked())
    assert events and events[0]["data"]["attempt"] == 1, events


def test_cancel_and_drain_reach_a_remote_worker(laptop: RemoteWorker, admin: Admin, running: Running) -> None:
    task_id = admin.submit(_slow_steps(running.site.url, 25))
    admin.wait(task_id, "running")
    laptop.wait_for(f"running {task_id}#1")
    r = admin.http.delete(f"/admin/tasks/{task_id}")
    assert r.status_code == 200, r.text
    laptop.wait_for(f"task {task_id} cancelled")
    assert admin.wait(task_id, "cancelled")["status"] == "cancelled"
    worker_id = json.loads((laptop.folder / "state" / "worker.json").read_text())["worker_id"]
    r = admin.http.post(f"/admin/workers/{worker_id}/drain")
    assert r.status_code == 200, r.text
    laptop.wait_for("drained: ")
    assert admin.worker(worker_id)["status"] == "draining"


def test_a_removed_worker_is_cut_off_and_stops(laptop: RemoteWorker, admin: Admin) -> None:
    r = admin.http.delete(f"/admin/workers/{_worker_id(laptop)}")
    assert r.status_code == 204, r.text
    laptop.proc.wait(WAIT_CAP)
    assert laptop.proc.returncode != 0
    assert "the platform refused this worker's key" in laptop.text(), laptop.text()[-2000:]


def test_a_worker_that_does_not_come_back_loses_the_task_to_another(
    laptop: RemoteWorker,
    admin: Admin,
    cutter: Cutter,
    invite: str,
    running: Running,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # laptop-1 was drained by the test before; a fresh laptop takes the task, then dies for good
    first = RemoteWorker(cutter.url, invite, tmp_path_factory.mktemp("laptop2"), "laptop-2")
    try:
        first.wait_for("connected to ")
        task_id = admin.submit(_slow_steps(running.site.url, 6))
        first.wait_for(f"running {task_id}#1")
        first.stop(signal.SIGKILL)  # its socket drops and nobody comes back for the lease
        second = RemoteWorker(running.url, invite, tmp_path_factory.mktemp("laptop3"), "laptop-3")
        try:
            second.wait_for(f"running {task_id}#")
            task = admin.wait(task_id, "completed", "failed", "cancelled", "timed_out")
            assert task["status"] == "completed", task
            second_id = json.loads((second.folder / "state" / "worker.json").read_text())["worker_id"]
            assert task["worker_id"] == second_id
        finally:
            second.stop()
    finally:
        first.stop()


# --- raw sockets --------------------------------------------------------------------------------------
def _worker_id(worker: RemoteWorker) -> str:
    return str(json.loads((worker.folder / "state" / "worker.json").read_text())["worker_id"])


def _ws_url(running: Running) -> str:
    return running.url.replace("http://", "ws://") + PATH


def _register(running: Running, admin: Admin, name: str) -> dict[str, Any]:
    code = admin.invite(name)["invite_code"]
    r = httpx.post(f"{running.url}/workers/register", json={"invite_code": code, "name": name}, timeout=30)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def _until_closed(ws: websockets.ClientConnection, frame: str, tries: int = 100) -> None:
    """Sends `frame` (reading each answer) until the bridge closes the socket; fails if it never does."""
    try:
        for _ in range(tries):
            await ws.send(frame)
            await ws.recv()
    except ConnectionClosed:
        return
    raise AssertionError(f"the socket stayed open after {tries} such frames")


class _connect:
    """A raw socket past WORKER_CONNECT (its CONNECTED read)."""

    def __init__(self, running: Running, key: str, slots: int) -> None:
        self.url, self.key, self.slots = _ws_url(running), key, slots

    async def __aenter__(self) -> websockets.ClientConnection:
        self.ws = await websockets.connect(self.url, max_size=None)
        await self.ws.send(json.dumps({"type": "WORKER_CONNECT", "api_key": self.key, "slots": self.slots}))
        hello = json.loads(await self.ws.recv())
        assert hello["type"] == "CONNECTED", hello
        return self.ws

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
