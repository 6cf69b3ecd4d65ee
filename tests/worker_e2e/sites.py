"""Local stand-ins for third parties, served on 127.0.0.1 only.

`TotpSite` stands in for a customer's website: sign-in needs a username, a password and then a 6-digit
TOTP code (RFC 6238, computed here independently of the worker's code, ±1 period of clock skew); a session
cookie then opens `/app`, which also keeps a counter in localStorage so a saved profile's storage shows.
Every successful sign-in is counted.

The webhook receiver is the walking skeleton's (tests/e2e/sites.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import threading
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from browserfleet_devkit.sites import QuietHandler
from browserfleet_devkit.testing import LoopbackHTTPServer


def totp_code(seed: str, at: float) -> str:
    key = base64.b32decode(seed + "=" * (-len(seed) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(at // 30)), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return str((struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000).zfill(6)


def _page(title: str, body: str) -> bytes:
    return f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>".encode()


LOGIN = _page(
    "Sign in",
    '<form id="login-form" method="post" action="/login"><input id="username" name="username">'
    '<input id="password" name="password" type="password"><button id="submit">Next</button></form>',
)
OTP = _page(
    "Two-step",
    '<form id="otp-form" method="post" action="/otp"><input id="code" name="code">'
    '<button id="verify">Verify</button></form>',
)


class TotpSite(LoopbackHTTPServer):
    __test__ = False

    def __init__(self, username: str, password: str, seed: str) -> None:
        self.username, self.password, self.seed = username, password, seed
        self.logins: list[str] = []  # usernames of completed sign-ins (password and code both right)
        self.failures: list[str] = []
        self._pending: dict[str, str] = {}  # half-signed-in token -> user
        self._sessions: dict[str, str] = {}
        self.lock = threading.Lock()
        site = self

        class Handler(QuietHandler):
            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.answer(status, body, headers=headers)

            def _cookie(self, name: str) -> str | None:
                c = SimpleCookie(self.headers.get("Cookie", ""))
                return c[name].value if name in c else None

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/login":
                    self._send(200, LOGIN)
                elif path == "/otp":
                    self._send(200, OTP)
                elif path == "/app":
                    user = site._sessions.get(self._cookie("session") or "")
                    if user is None:
                        self._send(200, _page("Sign in required", '<a id="signin" href="/login">Sign in</a>'))
                        return
                    self._send(
                        200,
                        _page(
                            "App",
                            f'<h1 id="welcome">Welcome {user}</h1><p id="visits"></p><script>'
                            "const n = Number(localStorage.getItem('visits') || 0) + 1;"
                            "localStorage.setItem('visits', String(n));"
                            "document.getElementById('visits').textContent = String(n);</script>"
                            '<p id="slow">working</p>',
                        ),
                    )
                elif path == "/slow":
                    self._send(200, _page("Slow", '<p id="busy">this never finishes</p>'))
                else:
                    self._send(404, _page("Not found", "not found"))

            def do_POST(self) -> None:
                form = parse_qs(self.read_body().decode())
                path = urlsplit(self.path).path
                if path == "/login":
                    if form.get("username") == [site.username] and form.get("password") == [site.password]:
                        token = secrets.token_hex(8)
                        site._pending[token] = site.username
                        self._send(
                            303, headers={"Location": "/otp", "Set-Cookie": f"pending={token}; Path=/"}
                        )
                    else:
                        site.failures.append("password")
                        self._send(401, _page("Wrong", '<p id="error">wrong password</p>'))
                elif path == "/otp":
                    user = site._pending.pop(self._cookie("pending") or "", None)
                    now = time.time()
                    codes = {totp_code(site.seed, now + d) for d in (-30, 0, 30)}
                    if user is None or form.get("code", [""])[0] not in codes:
                        site.failures.append("code")
                        self._send(401, _page("Wrong", '<p id="error">wrong code</p>'))
                        return
                    token = secrets.token_hex(16)
                    with site.lock:
                        site._sessions[token] = user
                        site.logins.append(user)
                    self._send(303, headers={"Location": "/app", "Set-Cookie": f"session={token}; Path=/"})
                else:
                    self._send(404)

        super().__init__(Handler)
