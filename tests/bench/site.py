"""Stand-in for a customer's website (a third party), served on 127.0.0.1 only: a search form whose
button writes the query into the page, and a results table."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PAGE = b"""<!doctype html><html><head><title>Acme search</title></head><body>
<input id="q" name="q"><button id="go" type="button"
 onclick="document.getElementById('echo').textContent = document.getElementById('q').value">Search</button>
<p id="echo"></p>
<table id="results"><thead><tr><th>Name</th><th>Company</th><th>Score</th></tr></thead><tbody>
<tr><td class="name">Ada Lovelace</td><td class="company">Analytical Engines</td><td class="score">97</td></tr>
<tr><td class="name">Grace Hopper</td><td class="company">COBOL Inc</td><td class="score">93</td></tr>
<tr><td class="name">Alan Turing</td><td class="company">Bletchley</td><td class="score">99</td></tr>
</tbody></table></body></html>"""


class Site(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/favicon.ico":
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(PAGE)))
                self.end_headers()
                self.wfile.write(PAGE)

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/search"

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
