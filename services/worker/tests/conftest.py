"""Fixtures for the worker's tests: one Chromium per test session and a small website on 127.0.0.1."""

from __future__ import annotations

import contextlib
import html
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import nats
import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.auth import OrgPolicy, WorkerOrgPolicyRequest
from browserfleet_core.errors import Unavailable
from browserfleet_core.messaging import ERROR_HEADER
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.netguard import parse_networks
from nats.aio.msg import Msg

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


@pytest.fixture(scope="session", autouse=True)
async def org_policies(nats_url: str) -> AsyncIterator[OrgPolicyStand]:
    stand = OrgPolicyStand()
    nc = await nats.connect(nats_url)

    async def on_request(msg: Msg) -> None:
        await stand.answer(msg, nc)

    sub = await nc.subscribe(subjects.Auth.ORG_POLICY, cb=on_request)
    try:
        yield stand
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        await nc.close()


_ORDERS = [("A-1", "Widget", "12.50"), ("A-2", "Gadget", "7.00"), ("A-3", "Gizmo", None)]


def _page(title: str, body: str) -> bytes:
    return f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>".encode()


class _CustomerSite(BaseHTTPRequestHandler):
    """Stands in for a customer's website (a third party): a login form, an orders table behind a session
    cookie, and an /echo page that prints back whatever it is given, as careless sites do."""

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _session(self) -> str | None:
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        return cookie["session"].value if "session" in cookie else None

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/login":
            self._send(
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
                self._send(200, _page("Sign in required", "<h1>Please log in</h1>"))
                return
            rows = "".join(
                f'<tr><td class="id">{i}</td><td class="item">{item}</td>'
                + (f'<td class="total">{total}</td>' if total else "<td></td>")
                + "</tr>"
                for i, item, total in _ORDERS
            )
            self._send(
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
            self._send(200, _page(f"Echo {html.escape(q)}", f'<p id="echo">You typed: {html.escape(q)}</p>'))
        else:
            self._send(404, _page("Not found", "<h1>Not found</h1>"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        user = form.get("user", [""])[0]
        if form.get("password", [""])[0] != PASSWORD:
            self._send(401, _page("Sign in failed", "<h1>Wrong password</h1>"))
            return
        self._send(303, b"", {"Location": "/orders", "Set-Cookie": f"session={user}; Path=/; HttpOnly"})


@pytest.fixture(scope="session")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CustomerSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[BrowserHost]:
    # the stand-in sites live on 127.0.0.1, which the worker blocks unless the operator allows it
    host = BrowserHost(allowed_networks=parse_networks(["127.0.0.1/32"]))
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


class _ActionsSite(BaseHTTPRequestHandler):
    """Stands in for a third-party website exercising every step action, and for hostile pages."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(
        self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        if url.path == "/actions":
            self._send(200, _page("Actions", ACTIONS_PAGE))
        elif url.path == "/inner":
            self._send(
                200, _page("Inner", '<button id="inbtn" onclick="this.textContent=\'clicked\'">in</button>')
            )
        elif url.path == "/list":
            n = int(q.get("page", ["1"])[0])
            items = "".join(f'<li class="item">item {n}-{i}</li>' for i in range(3))
            nxt = f'<a id="next" href="/list?page={n + 1}">next</a>' if n < 3 else ""
            self._send(200, _page(f"List {n}", f"<ul>{items}</ul>{nxt}"))
        elif url.path == "/file.csv":
            self._send(
                200, b"a,b\n1,2\n", "text/csv", Content_Disposition='attachment; filename="report.csv"'
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
            self._send(
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
            self._send(200, _page("Img", f'<img src="{q.get("src", [""])[0]}"><p id="ok">ok</p>'))
        else:
            self._send(404, _page("Not found", "<h1>Not found</h1>"))


@pytest.fixture(scope="session")
def actions_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ActionsSite)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
