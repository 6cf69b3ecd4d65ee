"""The network log of a task whose trace takes no DOM snapshots while its steps run (TRACE_SNAPSHOTS=failure, the
default): recorded beside the trace from the context's preparation on (netlog.py), it becomes the failed task's
`trace.network` in `trace.zip`; a succeeded task keeps nothing of it, not even a file. With real Chromium and a
local site; secrets typed into the page and sent on as headers are scrubbed from it like from the rest of the
trace."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from browserfleet_contracts.tasks import TaskDispatch, TaskSpec
from browserfleet_devkit.sites import QuietHandler, secret_forms_in
from browserfleet_devkit.testing import LoopbackHTTPServer
from browserfleet_worker import netlog
from browserfleet_worker.attempt import _trace
from browserfleet_worker.browser import BrowserHost, TraceOptions
from browserfleet_worker.execution import build_runner
from browserfleet_worker.settings import WorkerSettings
from browserfleet_worker.steps import StepsOutcome
from browserfleet_worker.steps import runner as runner_module

SECRET = 'p@ss w/rd+"é'

_START = b"""<!doctype html><html><head><title>Shop</title></head><body>
<img src="/pixel.gif"><p id="data"></p>
<input id="password" type="password"><button id="send">Send</button>
<script>
fetch('/api/data?page=1').then(r => r.text()).then(t => { document.getElementById('data').textContent = t; });
document.getElementById('send').addEventListener('click', async () => {
  const pw = document.getElementById('password').value;
  const b64 = (s) => btoa(unescape(encodeURIComponent(s)));
  await fetch('/api/login', {method: 'POST', headers: {'Authorization': 'Basic ' + b64('ada:' + pw),
    'X-Token': encodeURIComponent(pw), 'Content-Type': 'application/json'}, body: JSON.stringify({pw})});
  document.getElementById('data').textContent = 'sent';
});
</script></body></html>"""


class _Shop(QuietHandler):
    """Stands in for a customer's website (a third party): a page that loads an image and calls its API, and
    sends what is typed into its password input on as an Authorization header, a header of its own and JSON."""

    def do_GET(self) -> None:
        if self.path.startswith("/api/data"):
            self.answer(200, b'{"rows": 3}', "application/json")
        elif self.path == "/pixel.gif":
            self.answer(200, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif")
        else:
            self.answer(200, _START)

    def do_POST(self) -> None:
        self.read_body()
        self.answer(200, b'{"ok": true}', "application/json")


@pytest.fixture(scope="module")
def shop() -> Iterator[str]:
    with LoopbackHTTPServer(_Shop) as server:
        yield server.url


def _settings(**extra: Any) -> WorkerSettings:
    return WorkerSettings(
        nats_url="nats://unused.invalid:4222",
        worker_key="sk_worker_netlog",
        browser_allow_networks=["127.0.0.1/32"],
        **extra,
    )


def _task(steps: list[dict[str, Any]]) -> TaskDispatch:
    return TaskDispatch(
        task_id="t-netlog",
        org_id="org-1",
        attempt=1,
        priority="normal",
        timeout_seconds=60,
        spec=TaskSpec.model_validate({"steps": steps}),
    )


def failing(shop: str) -> TaskDispatch:
    return _task(
        [
            {"action": "navigate", "url": f"{shop}/start"},
            {"action": "wait_for", "selector": "#data:has-text('rows')"},
            {"action": "click", "selector": "#absent", "timeout_ms": 300},
        ]
    )


async def run_as_worker(
    browser: BrowserHost, task: TaskDispatch, values: dict[str, str] | None = None, **extra: Any
) -> tuple[StepsOutcome, bool]:
    """`task` run as the worker runs it: in the context prepared (with its recording) during the claim. Also
    whether that context recorded its network log."""
    settings = _settings(**extra)
    runner, policy = build_runner(settings, task, values or {})
    rt: Any = SimpleNamespace(settings=settings)
    prepared = browser.prepare(_trace(rt, task))
    async with browser.context(policy, accept_downloads=True, prepared=prepared) as ctx:
        recorded = netlog.running(ctx)
        out = await runner.run(ctx)
    return out, recorded


def _files(out: StepsOutcome) -> dict[str, bytes]:
    trace = next(a.data for a in out.artifacts if a.name == "trace.zip")
    with zipfile.ZipFile(io.BytesIO(trace)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _requests(network: bytes) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in network.decode().splitlines()]
    assert {e["type"] for e in events} == {"resource-snapshot"}
    return [e["snapshot"] for e in events]


async def test_a_failed_task_keeps_the_network_log_of_its_steps_by_default(
    browser: BrowserHost, shop: str
) -> None:
    """The default trace takes no DOM snapshot while the steps run (the failed page's DOM is added at the end),
    and still keeps the requests the page made before it failed, where a trace keeps its network log."""
    rt: Any = SimpleNamespace(settings=_settings())
    assert _trace(rt, failing(shop)) == TraceOptions(screenshots=False, snapshots=False, network=True)
    out, recorded = await run_as_worker(browser, failing(shop))
    assert out.status == "failed" and out.error_step == 2, out.error_message
    assert recorded
    files = _files(out)
    steps = files["trace.trace"].decode().splitlines()
    assert not [e for e in steps if '"frame-snapshot"' in e], "no snapshot while the steps ran"
    assert [e for e in files["failure.trace"].decode().splitlines() if '"frame-snapshot"' in e]
    requests = _requests(files["trace.network"])
    urls = [r["request"]["url"] for r in requests]
    assert f"{shop}/start" in urls and f"{shop}/pixel.gif" in urls and f"{shop}/api/data?page=1" in urls, urls
    api = next(r for r in requests if r["request"]["url"].endswith("/api/data?page=1"))
    assert api["response"]["status"] == 200 and api["request"]["method"] == "GET"
    assert api["startedDateTime"] and api["_monotonicTime"] > 0  # placed on the trace's timeline


async def test_a_succeeded_task_keeps_nothing_of_its_network_log(
    browser: BrowserHost, shop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded as for every task, then neither stored nor left on disk: the driver's file goes with the
    context."""
    monkeypatch.setattr(netlog, "_folder", tmp_path)
    ok = _task([{"action": "navigate", "url": f"{shop}/start"}])
    for _ in range(2):
        out, recorded = await run_as_worker(browser, ok)
        assert out.status == "completed", out.error_message
        assert recorded and out.artifacts == []
    await browser.closed()
    assert _names(tmp_path) == []


async def test_a_secret_typed_into_the_page_and_sent_as_headers_is_not_in_the_network_log(
    browser: BrowserHost, shop: str
) -> None:
    """As in the rest of the trace, every form of the value is overwritten: the Authorization header (base64 of
    user:value), a header of the site's own (percent-encoded) and a JSON body."""
    steps: list[dict[str, Any]] = [
        {"action": "navigate", "url": f"{shop}/start"},
        {"action": "fill", "selector": "#password", "value": "{{ secrets.PW }}"},
        {"action": "click", "selector": "#send"},
        {"action": "wait_for", "selector": "#data:has-text('sent')"},
        {"action": "click", "selector": "#absent", "timeout_ms": 300},
    ]
    out, _ = await run_as_worker(browser, _task(steps), {"PW": SECRET})
    assert out.status == "failed" and out.error_step == 4, out.error_message
    files = _files(out)
    login = [r for r in _requests(files["trace.network"]) if r["request"]["url"].endswith("/api/login")]
    assert login, "the request that carried the secret is in the log"
    headers = {h["name"].lower(): h["value"] for h in login[0]["request"]["headers"]}
    assert headers["authorization"].startswith("Basic ") and "x-token" in headers
    for name, content in files.items():
        assert secret_forms_in(SECRET, content) == [], name
    for artifact in out.artifacts:
        assert secret_forms_in(SECRET, artifact.data) == [], artifact.name


async def test_a_network_log_the_driver_does_not_write_in_time_does_not_hold_the_task(
    browser: BrowserHost, shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded like every other failure artifact: the trace is kept without it, and the log says so."""

    async def hangs(_ctx: Any) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(netlog, "export", hangs)
    monkeypatch.setattr(runner_module, "NETWORK_LOG_SECONDS", 0.2)
    out, _ = await asyncio.wait_for(run_as_worker(browser, failing(shop)), 30)
    assert out.status == "failed" and out.error_step == 2, out.error_message
    files = _files(out)
    assert "failure.trace" in files and files["trace.network"] == b""
    assert "trace.zip: no network log, it could not be written in time" in [line.message for line in out.logs]


def test_a_network_log_over_its_bound_keeps_its_latest_requests(tmp_path: Path) -> None:
    """Only the bound's worth of the file is read; the entries cut at its start are left out whole."""
    entries = [
        {"startedDateTime": "2026-01-01T00:00:00Z", "request": {"url": f"http://x/{i}", "note": '],{"a": 1}'}}
        for i in range(2000)
    ]
    har = tmp_path / "a.har"
    har.write_text(json.dumps({"log": {"version": "1.2", "entries": entries}}, separators=(",", ":")))
    lines, cut = netlog.trace_network(har)
    assert not cut and len(lines.splitlines()) == 2000
    lines, cut = netlog.trace_network(har, limit=20_000)
    kept = [json.loads(line)["snapshot"]["request"]["url"] for line in lines.decode().splitlines()]
    assert cut and 0 < len(kept) < 2000
    assert kept == [f"http://x/{i}" for i in range(2000 - len(kept), 2000)]
    assert len(lines) < 30_000


async def test_a_long_tasks_recording_is_handed_to_disk_as_it_goes_and_kept_whole(
    browser: BrowserHost, shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recording is exported and started again every ROTATE_SECONDS, so the driver never holds more than
    that long's requests (a page that never stops sending would otherwise grow the driver, every slot's,
    without bound); the segments on disk still make the whole task's log."""
    monkeypatch.setattr(netlog, "ROTATE_SECONDS", 0.3)
    started = 0
    original = netlog._har_start

    async def counted(channel: Any) -> tuple[str, Path]:
        nonlocal started
        started += 1
        return await original(channel)

    monkeypatch.setattr(netlog, "_har_start", counted)
    task = _task(
        [
            {"action": "navigate", "url": f"{shop}/start?early=1"},
            {"action": "wait_for", "selector": "#data:has-text('rows')"},
            {"action": "wait_for", "delay_ms": 1500},  # five segments
            {"action": "navigate", "url": f"{shop}/late"},
            {"action": "click", "selector": "#absent", "timeout_ms": 300},
        ]
    )
    out, recorded = await run_as_worker(browser, task)
    assert out.status == "failed" and out.error_step == 4, out.error_message
    assert recorded and started >= 3, f"the recording was started {started} time(s)"
    urls = [r["request"]["url"] for r in _requests(_files(out)["trace.network"])]
    assert f"{shop}/start?early=1" in urls and f"{shop}/late" in urls, urls


async def test_an_idle_context_keeps_no_file_per_rotation(
    browser: BrowserHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prepared context may wait long for its task: its empty segments are not kept."""
    monkeypatch.setattr(netlog, "_folder", tmp_path)
    monkeypatch.setattr(netlog, "ROTATE_SECONDS", 0.1)
    settings = _settings()
    task = _task([{"action": "navigate", "url": "http://127.0.0.1/"}])
    _, policy = build_runner(settings, task, {})
    rt: Any = SimpleNamespace(settings=settings)
    prepared = browser.prepare(_trace(rt, task))
    async with browser.context(policy, accept_downloads=True, prepared=prepared) as ctx:
        assert netlog.running(ctx)
        await asyncio.sleep(1.0)  # ten rotations
        assert _names(tmp_path) == []  # the recording under way is written when it is exported
    assert _names(tmp_path) == []


def test_segments_the_later_ones_make_unneeded_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netlog, "MAX_NETWORK_LOG_BYTES", 100)
    segments = []
    for i, size in enumerate((80, 80, 30, 80)):
        segments.append(tmp_path / f"{i}.har")
        segments[-1].write_bytes(b"x" * size)
    assert netlog._drop_unneeded(segments)
    # the last two hold 110 bytes, more than the log keeps: the two before them are not needed; the last
    # alone (80) would not be enough, so the one before it stays
    assert [p.name for p in segments] == ["2.har", "3.har"]
    assert _names(tmp_path) == ["2.har", "3.har"]
    assert not netlog._drop_unneeded(segments)  # nothing more to let go: the log is not cut again
