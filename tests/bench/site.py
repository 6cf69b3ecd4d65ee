"""Stand-in for a customer's website (a third party), served on 127.0.0.1 only: a search form whose
button writes the query into the page, and a results table."""

from __future__ import annotations

from browserfleet_devkit.sites import QuietHandler
from browserfleet_devkit.testing import LoopbackHTTPServer

PAGE = b"""<!doctype html><html><head><title>Acme search</title></head><body>
<input id="q" name="q"><button id="go" type="button"
 onclick="document.getElementById('echo').textContent = document.getElementById('q').value">Search</button>
<p id="echo"></p>
<table id="results"><thead><tr><th>Name</th><th>Company</th><th>Score</th></tr></thead><tbody>
<tr><td class="name">Ada Lovelace</td><td class="company">Analytical Engines</td><td class="score">97</td></tr>
<tr><td class="name">Grace Hopper</td><td class="company">COBOL Inc</td><td class="score">93</td></tr>
<tr><td class="name">Alan Turing</td><td class="company">Bletchley</td><td class="score">99</td></tr>
</tbody></table></body></html>"""


class Site(LoopbackHTTPServer):
    def __init__(self) -> None:
        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/favicon.ico":
                    self.answer(404)
                    return
                self.answer(200, PAGE)

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"{super().url}/search"
