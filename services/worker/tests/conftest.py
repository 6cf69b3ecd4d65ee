"""Fixtures for the worker's tests: one Chromium per test session and a small website on 127.0.0.1."""

from __future__ import annotations

import html
import threading
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.netguard import parse_networks

PASSWORD = "hunter2-s3cret!"

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
