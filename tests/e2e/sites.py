"""Local stand-ins for third parties, served on 127.0.0.1 only.

* `TestSite` stands in for a customer's website: a login form that needs the right password, then a page
  with a table.
* `WebhookReceiver` stands in for a customer's system receiving webhooks; it records every request.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from browserfleet_core.testing import LoopbackHTTPServer

LOGIN_PAGE = b"""<!doctype html><html><head><title>Acme login</title></head><body>
<form method="post" action="/login">
  <input id="username" name="username"><input id="password" name="password" type="password">
  <button id="submit" type="submit">Sign in</button>
</form></body></html>"""

TABLE_PAGE = b"""<!doctype html><html><head><title>Acme leads</title></head><body>
<h1 id="welcome">Welcome back</h1>
<table id="leads"><thead><tr><th>Name</th><th>Company</th><th>Score</th></tr></thead><tbody>
<tr class="lead"><td class="name">Ada Lovelace</td><td class="company">Analytical Engines</td><td class="score">97</td></tr>
<tr class="lead"><td class="name">Grace Hopper</td><td class="company">COBOL Inc</td><td class="score">93</td></tr>
<tr class="lead"><td class="name">Alan Turing</td><td class="company">Bletchley</td><td class="score">99</td></tr>
</tbody></table></body></html>"""


class TestSite(LoopbackHTTPServer):
    __test__ = False  # not a pytest class

    def __init__(self, username: str, password: str) -> None:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/login":
                    self._send(200, LOGIN_PAGE)
                elif self.path == "/leads":
                    if "session=ok" in (self.headers.get("Cookie") or ""):
                        self._send(200, TABLE_PAGE)
                    else:
                        self._send(302, headers={"Location": "/login"})
                else:
                    self._send(404, b"not found")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                ok = form.get("username") == [site.username] and form.get("password") == [site.password]
                site.login_attempts.append(ok)
                if ok:
                    self._send(302, headers={"Location": "/leads", "Set-Cookie": "session=ok; Path=/"})
                else:
                    self._send(401, b"<p id='error'>wrong password</p>")

        self.username = username
        self.password = password
        self.login_attempts: list[bool] = []
        super().__init__(Handler)


@dataclass
class ReceivedWebhook:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver(LoopbackHTTPServer):
    def __init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.received.append(
                        ReceivedWebhook({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    receiver.event.set()
                self.send_response(204)
                self.end_headers()

        self.received: list[ReceivedWebhook] = []
        self.lock = threading.Lock()
        self.event = threading.Event()
        super().__init__(Handler)
