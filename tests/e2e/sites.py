"""Local stand-ins for third parties, served on 127.0.0.1 only.

* `TestSite` stands in for a customer's website: a login form that needs the right password, then a page
  with a table.
* `WebhookReceiver` stands in for a customer's system receiving webhooks: it answers 204 and records every
  request (headers and raw body, so a test can verify the signature over the exact bytes, with
  `verify_standard_webhook`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from browserfleet_devkit.sites import QuietHandler
from browserfleet_devkit.testing import LoopbackHTTPServer

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

        class Handler(QuietHandler):
            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.answer(status, body, "text/html", headers)

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
                form = parse_qs(self.read_body().decode())
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

    def login_steps(self, credential: str, pause: float = 0) -> list[dict[str, Any]]:
        """A task's steps that sign in here with the vault's secret `credential` as the password (`pause`
        seconds before submitting) and wait for the leads table."""
        pausing = [{"action": "wait_for", "delay_ms": int(pause * 1000)}] if pause else []
        return [
            {"action": "navigate", "url": f"{self.url}/login"},
            {"action": "fill", "selector": "#username", "value": self.username},
            {"action": "fill", "selector": "#password", "value": f"{{{{ secrets.{credential} }}}}"},
            *pausing,
            {"action": "click", "selector": "#submit"},
            {"action": "wait_for", "selector": "#leads"},
        ]


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification written from the spec, independent of the service's code."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    if abs(time.time() - int(headers["webhook-timestamp"])) > 300:
        return False
    return any(
        sig.split(",", 1)[0] == "v1" and hmac.compare_digest(sig.split(",", 1)[1], expected)
        for sig in headers["webhook-signature"].split()
    )


@dataclass
class ReceivedWebhook:
    headers: dict[str, str]  # names lower-cased
    body: bytes
    path: str = "/"

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver(LoopbackHTTPServer):
    def __init__(self) -> None:
        self.received: list[ReceivedWebhook] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.read_body()
                with receiver.changed:
                    receiver.received.append(
                        ReceivedWebhook({k.lower(): v for k, v in self.headers.items()}, body, self.path)
                    )
                    receiver.changed.notify_all()
                self.send_response(204)
                self.end_headers()

        super().__init__(Handler)

    def wait_for(self, match: Callable[[ReceivedWebhook], bool], timeout: float) -> ReceivedWebhook | None:
        """The first request `match` accepts, waiting up to `timeout` seconds for it to arrive."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = next((r for r in self.received if match(r)), None)
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    return found
                self.changed.wait(remaining)
