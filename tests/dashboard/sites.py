"""`HeldSite` stands in for a customer's website, served on 127.0.0.1 only: `/held/<token>` answers only once
the test releases that token, so a task that opens it stays `running` for exactly as long as the test
needs to watch it (no sleeps, no timing). `/form` is a page with one text field at a known place (`FIELD`,
in CSS pixels) whose value the page repeats in `#echo`, for a person who takes over the task's browser."""

from __future__ import annotations

import threading

from browserfleet_devkit.sites import QuietHandler
from browserfleet_devkit.testing import LoopbackHTTPServer

# hang protection: a held page answers anyway after this long, so a failed test never leaves a task waiting
HOLD_CAP_SECONDS = 90.0

PAGE = """<!doctype html><html><head><title>Acme status</title>
<style>body {{ font-family: sans-serif; margin: 2rem; }} .ok {{ color: #15803d; }}
td, th {{ padding: .3rem 1rem; text-align: left; border-bottom: 1px solid #ddd; }}</style></head>
<body><h1 id="status">{token}: all systems nominal</h1>
<p class="ok">Orders shipped today: <b id="shipped">128</b></p>
<table><tr><th>Service</th><th>State</th><th>Latency</th></tr>
<tr><td>Checkout</td><td class="ok">up</td><td>84 ms</td></tr>
<tr><td>Search</td><td class="ok">up</td><td>41 ms</td></tr>
<tr><td>Invoices</td><td class="ok">up</td><td>120 ms</td></tr></table></body></html>"""

# where the form page's text field is, in the page's CSS pixels: (left, top, width, height)
FIELD = (40, 120, 400, 48)
FORM = f"""<!doctype html><html><head><title>Sign-up</title></head><body style="margin:0;font-family:sans-serif">
<input id="name" autocomplete="off" oninput="document.getElementById('echo').textContent = this.value"
 style="position:absolute;left:{FIELD[0]}px;top:{FIELD[1]}px;width:{FIELD[2]}px;height:{FIELD[3]}px;font-size:24px">
<p id="echo" style="position:absolute;left:40px;top:220px"></p></body></html>"""


class HeldSite(LoopbackHTTPServer):
    __test__ = False

    def __init__(self) -> None:
        site = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if self.path == "/form":
                    self.answer(200, FORM.encode())
                    return
                parts = self.path.strip("/").split("/")
                if len(parts) != 2 or parts[0] != "held":
                    self.send_error(404)
                    return
                token = parts[1]
                site.gate(token).wait(HOLD_CAP_SECONDS)
                self.answer(200, PAGE.format(token=token).encode())

        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        super().__init__(Handler)

    def gate(self, token: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(token, threading.Event())

    def held(self, token: str) -> str:
        """The URL of a page that answers once `release(token)` is called."""
        self.gate(token)
        return f"{self.url}/held/{token}"

    def release(self, token: str) -> None:
        self.gate(token).set()

    def release_all(self) -> None:
        with self._lock:
            for gate in self._gates.values():
                gate.set()
