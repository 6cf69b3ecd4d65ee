"""Stand-ins for third parties' web servers, shared by the worker's tests and the whole-platform tests.

`QuietHandler` is the base of every stand-in's request handler; `OnePageSite` is a customer's website of
one page. `SecretFormSite` stands in for a customer's
sign-in page that is careless with what is typed into it; `secret_forms_in` is the search for the forms a
secret takes that the tests of "no secret value in what a task stores" use, written apart from the worker's
own list of forms (browserfleet_worker.secret_forms) so that the one checks the other.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

from .testing import LoopbackHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """A stand-in's request handler: it logs nothing (a test's output is its own) and answers in one call."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def answer(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/html; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class OnePageSite(LoopbackHTTPServer):
    """A customer's website that answers every GET with `page`."""

    __test__ = False

    def __init__(self, page: bytes, content_type: str = "text/html") -> None:
        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self.answer(200, page, content_type)

        super().__init__(Handler)


_CARELESS_FORM = """<!doctype html><html><head><title>Form</title></head><body>
<form id="f" method="post" action="/signin">
<input id="password" name="password" type="password"><input id="note" name="note"><button id="go">Go</button>
</form>
<iframe id="frm" src="/inner" style="width:320px;height:60px;border:0"></iframe>
<a id="export" href="#"
   onclick="location.href='/export?q='+encodeURIComponent(document.getElementById('note').value);return false">OK</a>
<script>
document.getElementById('f').addEventListener('submit', async (e) => {
  e.preventDefault();
  const pw = document.getElementById('password').value;
  const b64 = (s) => btoa(unescape(encodeURIComponent(s)));
  await fetch('/api', {method: 'POST', body: [b64(pw), b64('x' + pw), b64('xy' + pw)].join(' ')});
  await fetch('/api', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({pw})});
  await fetch('/api?pw=' + encodeURIComponent(pw));
  e.target.submit();
});
</script></body></html>"""


class SecretFormSite(LoopbackHTTPServer):
    """A customer's sign-in page careless with what is typed into it: no declared charset (its form posts
    Latin-1), a script that sends the password on as base64 (at three offsets), JSON and a query string, an
    iframe with an input of its own, and an export that puts the note field into a CSV download. `signins`
    counts the form's submissions."""

    __test__ = False

    def __init__(self) -> None:
        self.signins = 0
        site = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/inner":
                    self.answer(
                        200, b"<!doctype html><html><body><input id='inner'></body></html>", "text/html"
                    )
                elif url.path == "/export":
                    q = parse_qs(url.query).get("q", [""])[0]
                    disposition = {"Content-Disposition": "attachment; filename=export.csv"}
                    self.answer(200, f"name,value\nnote,{q}\n".encode(), "text/csv", disposition)
                elif url.path == "/api":
                    self.answer(200, b"ok", "text/plain")
                else:
                    self.answer(200, _CARELESS_FORM.encode(), "text/html")

            def do_POST(self) -> None:
                self.read_body()
                if urlsplit(self.path).path == "/api":
                    self.answer(200, b"ok", "text/plain")
                    return
                site.signins += 1
                self.answer(200, b"<!doctype html><html><body><p id='done'>OK</p></body></html>", "text/html")

        super().__init__(Handler)


def careless_form_walk(url: str, secret: str, captures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A task's steps on SecretFormSite at `url`: the secret named `secret` goes everywhere the page can leak
    it, `captures` (screenshots, PDFs) are taken of the filled page, the note is exported as export.csv, the
    form is sent; then the task fails on a filled form again, so that its failure screenshot has something
    to hide."""
    value = f"{{{{ secrets.{secret} }}}}"
    return [
        {"action": "navigate", "url": f"{url}/form"},
        {"action": "fill", "selector": "#password", "value": value},
        {"action": "type", "selector": "#note", "text": value},  # a text input shows it
        {"action": "fill", "selector": "#inner", "frame": "#frm", "value": value},
        *captures,
        {"action": "download", "selector": "#export", "name": "export.csv"},
        {"action": "click", "selector": "#go"},
        {"action": "wait_for", "selector": "#done"},
        {"action": "navigate", "url": f"{url}/form"},
        {"action": "type", "selector": "#note", "text": value},
        {"action": "wait_for", "selector": "#never", "timeout_ms": 300},
    ]


def secret_forms_in(value: str, data: bytes) -> list[str]:
    """The forms of `value` found in `data`: plain, URL-encoded, JSON- and HTML-escaped (UTF-8 and Latin-1),
    and base64 at any alignment (every base64-looking run is decoded from each of 4 offsets)."""
    texts = {
        "plain": value,
        "url": quote(value, safe=""),
        "url+": quote_plus(value, safe=""),
        "url latin-1": quote(value.encode("latin-1"), safe=""),
        "url+ latin-1": quote_plus(value.encode("latin-1"), safe=""),
        "json": json.dumps(value)[1:-1],
        "json utf-8": json.dumps(value, ensure_ascii=False)[1:-1],
        "html": html.escape(value),
    }
    found = [name for name, text in texts.items() if text.encode() in data]
    if value.encode("latin-1") in data:
        found.append("plain latin-1")
    for run in re.findall(rb"[A-Za-z0-9+/_-]{8,}", data):
        run = run.replace(b"-", b"+").replace(b"_", b"/")
        for offset in range(4):
            chunk = run[offset:]
            if value.encode() in base64.b64decode(chunk[: len(chunk) - len(chunk) % 4]):
                found.append("base64")
    return found
