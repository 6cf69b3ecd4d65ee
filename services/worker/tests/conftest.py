"""Fixtures for the worker's tests: one Chromium per test session and a small website on 127.0.0.1."""

from __future__ import annotations

import contextlib
import html
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import nats
import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.auth import OrgPolicy, WorkerOrgPolicyRequest
from browserfleet_contracts.tasks import TaskDispatch, TaskSpec
from browserfleet_core.errors import Unavailable
from browserfleet_core.messaging import ERROR_HEADER
from browserfleet_devkit.sites import QuietHandler
from browserfleet_devkit.testing import LoopbackHTTPServer
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.netguard import parse_networks
from browserfleet_worker.settings import WorkerSettings
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from .artifact_stand import ArtifactStand

PASSWORD = "hunter2-s3cret!"


class OrgPolicyStand:
    """Stands in for auth (another service) on `svc.auth.org_policy`, for every test of this package: an org
    has the default policy unless a test sets one; an org listed in `down` gets the 503 of an auth that
    cannot answer. `asked` records (org_id, worker_key) of every request."""

    def __init__(self) -> None:
        self.policies: dict[str, OrgPolicy] = {}
        self.down: set[str] = set()
        self.asked: list[tuple[str, str]] = []

    async def answer(self, msg: Msg, nc: nats.NATS) -> None:
        req = WorkerOrgPolicyRequest.model_validate_json(msg.data)
        self.asked.append((req.org_id, req.worker_key))
        if req.org_id in self.down:
            body = Unavailable("auth did not answer in time", code="service_timeout").body()
            await nc.publish(msg.reply, body.model_dump_json().encode(), headers={ERROR_HEADER: "503"})
            return
        await msg.respond(self.policies.get(req.org_id, OrgPolicy()).model_dump_json().encode())


@pytest.fixture(scope="session")
async def stands_nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    """The stand-ins' connection: closing it at the end of the run ends their subscriptions."""
    async with await nats.connect(nats_url) as nc:
        yield nc


@pytest.fixture(scope="session", autouse=True)
async def org_policies(stands_nc: nats.NATS) -> OrgPolicyStand:
    stand = OrgPolicyStand()

    async def on_request(msg: Msg) -> None:
        await stand.answer(msg, stands_nc)

    await stands_nc.subscribe(endpoints.Auth.ORG_POLICY.subject, cb=on_request)
    return stand


@pytest.fixture(scope="session", autouse=True)
async def artifact_stand(stands_nc: nats.NATS) -> ArtifactStand:
    """worker-gateway's artifact commit and read (artifact_stand.py), for every test of this package."""
    stand = ArtifactStand(stands_nc)
    await stand.start()
    return stand


def kill_browser(host: BrowserHost) -> None:
    """SIGKILL every process of `host`'s browser: the fault the crash tests inject."""
    pids = host.browser_pids()
    assert pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def dispatch(
    js: JetStreamContext, pool: str, task_id: str, steps: list[dict[str, Any]], timeout_seconds: int
) -> None:
    """Attempt 1 of a steps task on `pool`'s normal priority, as the scheduler dispatches it."""
    d = TaskDispatch(
        task_id=task_id,
        org_id="org-1",
        attempt=1,
        priority="normal",
        timeout_seconds=timeout_seconds,
        spec=TaskSpec.model_validate({"steps": steps}),
    )
    await js.publish(
        subjects.task_run(pool, "normal"), d.model_dump_json().encode(), headers={"Nats-Msg-Id": task_id}
    )


def registering_worker(nats_url: str, state_dir: Path, invite: str = "inv", **more: Any) -> WorkerSettings:
    """A worker that registers with `invite` (the stand-in register accepts any) and keeps its identity in
    `state_dir`, beats every 0.2 s and may reach the stand-in sites on 127.0.0.1."""
    return WorkerSettings(
        nats_url=nats_url,
        worker_invite_code=invite,
        worker_state_dir=state_dir,
        heartbeat_seconds=0.2,
        browser_allow_networks=["127.0.0.1/32"],
        **more,
    )


_ORDERS = [("A-1", "Widget", "12.50"), ("A-2", "Gadget", "7.00"), ("A-3", "Gizmo", None)]


def _page(title: str, body: str) -> bytes:
    return f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>".encode()


class _CustomerSite(QuietHandler):
    """Stands in for a customer's website (a third party): a login form, an orders table behind a session
    cookie, and an /echo page that prints back whatever it is given, as careless sites do."""

    def _session(self) -> str | None:
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        return cookie["session"].value if "session" in cookie else None

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/login":
            self.answer(
                200,
                _page(
                    "Sign in",
                    '<form method="post" action="/login">'
                    '<input id="user" name="user"><input id="password" name="password" type="password">'
                    '<button id="go" type="submit">Sign in</button></form>',
                ),
            )
        elif url.path == "/orders":
            user = self._session()
            if user is None:
                self.answer(200, _page("Sign in required", "<h1>Please log in</h1>"))
                return
            rows = "".join(
                f'<tr><td class="id">{i}</td><td class="item">{item}</td>'
                + (f'<td class="total">{total}</td>' if total else "<td></td>")
                + "</tr>"
                for i, item, total in _ORDERS
            )
            self.answer(
                200,
                _page(
                    "Orders",
                    f"<h1>Orders for {html.escape(user)}</h1>"
                    f'<table id="orders"><tbody>{rows}</tbody></table>'
                    '<a id="invoice" href="/invoice/A-1.pdf">invoice</a>',
                ),
            )
        elif url.path == "/echo":
            q = parse_qs(url.query).get("q", [""])[0]
            self.answer(200, _page(f"Echo {html.escape(q)}", f'<p id="echo">You typed: {html.escape(q)}</p>'))
        else:
            self.answer(404, _page("Not found", "<h1>Not found</h1>"))

    def do_POST(self) -> None:
        form = parse_qs(self.read_body().decode())
        user = form.get("user", [""])[0]
        if form.get("password", [""])[0] != PASSWORD:
            self.answer(401, _page("Sign in failed", "<h1>Wrong password</h1>"))
            return
        self.answer(303, headers={"Location": "/orders", "Set-Cookie": f"session={user}; Path=/; HttpOnly"})


@pytest.fixture(scope="session")
def site() -> Iterator[str]:
    with LoopbackHTTPServer(_CustomerSite) as server:
        yield server.url


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[BrowserHost]:
    # the stand-in sites live on 127.0.0.1, which the worker blocks unless the operator allows it
    # with a context prepared ahead, as a worker runs: tasks without a profile take it (test_warm_contexts.py)
    host = BrowserHost(allowed_networks=parse_networks(["127.0.0.1/32"]), warm_contexts=1)
    await host.start()
    try:
        yield host
    finally:
        await host.close()


@pytest.fixture(scope="session")
def password() -> str:
    """The customer site's password, released to tasks as the secret PASSWORD."""
    return PASSWORD


ACTIONS_PAGE = """
<h1 id="title">Actions</h1>
<button id="dbl" ondblclick="this.textContent='double'">dbl</button>
<div id="hov" onmouseover="this.textContent='hovered'">hover me</div>
<input id="typed" onkeyup="document.getElementById('keys').textContent=String(Number(document.getElementById('keys').textContent)+1)">
<span id="keys">0</span>
<select id="color"><option value="r">Red</option><option value="g">Green</option></select>
<input id="agree" type="checkbox"><input id="news" type="checkbox" checked>
<input id="file" type="file" multiple
  onchange="document.getElementById('files').textContent=Array.from(this.files).map(f=>f.name+':'+f.size).join(',')">
<span id="files"></span>
<a id="later" href="#" onclick="setTimeout(()=>{location.hash='done'},50);return false">later</a>
<table id="prices"><thead><tr><th>Item</th><th>Price</th></tr></thead>
<tbody><tr><td>Widget</td><td>12.50</td></tr><tr><td>Gadget</td><td>7.00</td></tr></tbody></table>
<a id="dl" href="/file.csv">csv</a> <a id="bomb" href="/bomb">bomb</a>
<iframe id="frm" src="/inner"></iframe>
<div style="height:3000px"></div><p id="bottom">bottom</p>
"""


class _ActionsSite(QuietHandler):
    """Stands in for a third-party website exercising every step action, and for hostile pages."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        if url.path == "/actions":
            self.answer(200, _page("Actions", ACTIONS_PAGE))
        elif url.path == "/inner":
            self.answer(
                200, _page("Inner", '<button id="inbtn" onclick="this.textContent=\'clicked\'">in</button>')
            )
        elif url.path == "/list":
            n = int(q.get("page", ["1"])[0])
            items = "".join(f'<li class="item">item {n}-{i}</li>' for i in range(3))
            nxt = f'<a id="next" href="/list?page={n + 1}">next</a>' if n < 3 else ""
            self.answer(200, _page(f"List {n}", f"<ul>{items}</ul>{nxt}"))
        elif url.path == "/file.csv":
            self.answer(
                200, b"a,b\n1,2\n", "text/csv", {"Content-Disposition": 'attachment; filename="report.csv"'}
            )
        elif url.path == "/bomb":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Disposition", 'attachment; filename="bomb.bin"')
            self.send_header("Content-Length", str(64 * 1024 * 1024))
            self.end_headers()
            chunk = b"\0" * 65536
            try:
                for _ in range(1024):
                    self.wfile.write(chunk)
            except OSError:
                pass
        elif url.path == "/hostile":
            self.answer(
                200,
                _page(
                    "Hostile",
                    "<script>for (let i = 0; i < 50; i++) { alert('x' + i); }"
                    "window.open('/inner'); window.open('/inner');</script><p id='after'>still here</p>",
                ),
            )
        elif url.path == "/never":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body><p id='start'>loading")
            self.wfile.flush()
            with contextlib.suppress(OSError):
                for _ in range(120):
                    time.sleep(0.5)
                    self.wfile.write(b".")
                    self.wfile.flush()
        elif url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", q.get("to", ["/"])[0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/img-elsewhere":
            self.answer(200, _page("Img", f'<img src="{q.get("src", [""])[0]}"><p id="ok">ok</p>'))
        else:
            self.answer(404, _page("Not found", "<h1>Not found</h1>"))


@pytest.fixture(scope="session")
def actions_site() -> Iterator[str]:
    with LoopbackHTTPServer(_ActionsSite) as server:
        yield server.url
