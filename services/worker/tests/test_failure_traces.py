"""What a failed task's trace records, as the worker configures it (real Chromium): every action with its error,
and DOM snapshots (with the network log) of every action with TRACE_SNAPSHOTS=true, of the failed page only with
failure (the default; the network log then comes from beside the trace: test_network_log.py), none with false
(they are recorded on every task, failed or not, so an operator may trade them for CPU). The recording starts
with the context prepared during the claim, and a task that must not have that recording (a secret) stops it
before its first step."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from types import SimpleNamespace
from typing import Any

import pytest
from browserfleet_contracts.tasks import TaskDispatch, TaskSpec
from browserfleet_worker import browser as browser_module
from browserfleet_worker.attempt import _trace
from browserfleet_worker.browser import BrowserHost, TraceOptions, take_trace
from browserfleet_worker.execution import build_runner
from browserfleet_worker.netguard import parse_networks
from browserfleet_worker.settings import WorkerSettings
from browserfleet_worker.steps import StepsOutcome
from browserfleet_worker.steps import runner as runner_module
from playwright.async_api import Error as PlaywrightError


def failing(site: str) -> TaskDispatch:
    steps = [
        {"action": "navigate", "url": f"{site}/login"},
        {"action": "click", "selector": "#absent", "timeout_ms": 300},
    ]
    return TaskDispatch(
        task_id="t-trace",
        org_id="org-1",
        attempt=1,
        priority="normal",
        timeout_seconds=60,
        spec=TaskSpec.model_validate({"steps": steps}),
    )


async def trace_events(browser: BrowserHost, site: str, **extra: Any) -> list[dict[str, Any]]:
    settings = WorkerSettings(
        nats_url="nats://unused.invalid:4222",
        worker_key="sk_worker_trace",
        browser_allow_networks=["127.0.0.1/32"],
        **extra,
    )
    runner, policy = build_runner(settings, failing(site), {})
    async with browser.context(policy, accept_downloads=True) as ctx:
        out = await runner.run(ctx)
    assert out.status == "failed" and out.error_step == 1, out.error_message
    trace = next(a.data for a in out.artifacts if a.name == "trace.zip")
    assert any(a.name == "failure.png" for a in out.artifacts)
    with zipfile.ZipFile(io.BytesIO(trace)) as archive:
        lines = archive.read("trace.trace").decode().splitlines()
    return [json.loads(line) for line in lines]


async def test_a_failure_trace_has_its_actions_and_snapshots_unless_turned_off(
    browser: BrowserHost, site: str
) -> None:
    full = await trace_events(browser, site, trace_snapshots=True)
    assert [e for e in full if e.get("type") == "frame-snapshot"]

    lean = await trace_events(browser, site, trace_snapshots=False)
    # the failed click is in the trace, with its error
    clicks = [e for e in lean if e.get("type") == "before" and e.get("method") == "click"]
    assert clicks, sorted({str(e.get("type")) for e in lean})
    assert any(e.get("type") == "after" and e.get("error") for e in lean)
    assert not [e for e in lean if e.get("type") == "frame-snapshot"]


# --- the recording started with the context prepared during the claim (BrowserHost.prepare) ---------------------


def _events(trace: bytes) -> list[dict[str, Any]]:
    with zipfile.ZipFile(io.BytesIO(trace)) as archive:
        lines = archive.read("trace.trace").decode().splitlines()
    return [json.loads(line) for line in lines]


def _settings(**extra: Any) -> WorkerSettings:
    return WorkerSettings(
        nats_url="nats://unused.invalid:4222",
        worker_key="sk_worker_trace",
        browser_allow_networks=["127.0.0.1/32"],
        **extra,
    )


async def _run_prepared(
    browser: BrowserHost,
    site: str,
    trace: TraceOptions | None,
    values: dict[str, str],
    monkeypatch: pytest.MonkeyPatch | None = None,
    **extra: Any,
) -> tuple[StepsOutcome, bool]:
    """The failing task run in a context prepared with `trace`; also whether a recording still ran after it."""
    runner, policy = build_runner(_settings(**extra), failing(site), values)
    prepared = browser.prepare(trace)
    assert prepared is not None and prepared._pending is not None
    warm = await prepared._pending
    assert warm is not None
    async with browser.context(policy, accept_downloads=True, prepared=prepared) as ctx:
        assert ctx is warm.ctx
        if monkeypatch is not None:

            async def started_again(**_options: Any) -> None:
                raise AssertionError("the task started a second recording")

            async def recording_again(*_args: Any) -> None:
                raise AssertionError("the task started a second recording")

            monkeypatch.setattr(ctx.tracing, "start", started_again)
            monkeypatch.setattr(runner_module, "start_recording", recording_again)
        out = await runner.run(ctx)
        if monkeypatch is not None:
            monkeypatch.undo()
        assert take_trace(ctx) is None, "taken by its task"
        try:
            await ctx.tracing.start()
        except PlaywrightError:
            recording = True  # Playwright refuses a second start
        else:
            recording = False
            await ctx.tracing.stop()
    assert out.status == "failed" and out.error_step == 1, out.error_message
    return out, recording


async def test_a_task_keeps_the_recording_its_prepared_context_started(
    browser: BrowserHost, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = await _run_prepared(
        browser, site, TraceOptions(screenshots=False, snapshots=True), {}, monkeypatch, trace_snapshots=True
    )
    events = _events(next(a.data for a in out.artifacts if a.name == "trace.zip"))
    assert [e for e in events if e.get("type") == "before" and e.get("method") == "goto"]
    assert any(e.get("type") == "after" and e.get("error") for e in events)
    assert [e for e in events if e.get("type") == "frame-snapshot"]


async def test_a_prepared_recording_the_task_must_not_have_is_stopped_before_its_steps(
    browser: BrowserHost, site: str
) -> None:
    screencast = TraceOptions(screenshots=True, snapshots=True)
    out, _ = await _run_prepared(browser, site, screencast, {}, trace_screenshots=True)
    trace = next(a.data for a in out.artifacts if a.name == "trace.zip")
    assert [e for e in _events(trace) if e.get("type") == "screencast-frame"], "the screencast was recorded"

    # with a secret, never a screencast (its frames cannot be scrubbed): the prepared one is replaced
    secret = {"password": "correct horse battery"}
    out, _ = await _run_prepared(browser, site, screencast, secret, trace_screenshots=True)
    events = _events(next(a.data for a in out.artifacts if a.name == "trace.zip"))
    assert not [e for e in events if e.get("type") == "screencast-frame"]
    assert any(e.get("type") == "after" and e.get("error") for e in events)

    # a secret too short to scrub: no trace at all, the prepared recording stopped
    out, recording = await _run_prepared(
        browser, site, TraceOptions(screenshots=False, snapshots=True), {"pin": "12"}
    )
    assert not [a for a in out.artifacts if a.name == "trace.zip"]
    assert not recording


def test_the_recording_prepared_during_the_claim_follows_the_settings() -> None:
    def task(kind: str) -> TaskDispatch:
        spec = {"steps": [{"action": "navigate", "url": "http://127.0.0.1:9/"}]} if kind == "steps" else {}
        return TaskDispatch(
            task_id="t-x",
            org_id="org-1",
            attempt=1,
            priority="normal",
            timeout_seconds=60,
            spec=TaskSpec.model_validate({"kind": kind, "goal": "look", **spec} if kind == "agent" else spec),
        )

    def rt(**extra: Any) -> Any:
        return SimpleNamespace(settings=_settings(**extra))

    # the default (TRACE_SNAPSHOTS=failure): no snapshots, the network log beside the trace
    assert _trace(rt(), task("steps")) == TraceOptions(screenshots=False, snapshots=False, network=True)
    assert _trace(rt(trace_snapshots=True), task("steps")) == TraceOptions(screenshots=False, snapshots=True)
    assert _trace(rt(trace_snapshots=False, trace_screenshots=True), task("steps")) == TraceOptions(
        screenshots=True, snapshots=False
    )
    assert _trace(rt(trace_on_failure=False), task("steps")) is None  # TRACE_ON_FAILURE off: none starts
    assert _trace(rt(), task("agent")) is None  # an agent task records no trace


async def test_a_success_leaves_the_client_counting_no_recording(browser: BrowserHost, site: str) -> None:
    """Its recording is discarded with the context, unstopped: Playwright's client must not count it on (it
    would send every later call's stack to the driver, for the browser's life)."""
    settings = WorkerSettings(
        nats_url="nats://unused.invalid:4222",
        worker_key="sk_worker_trace",
        browser_allow_networks=["127.0.0.1/32"],
    )
    ok = failing(site).model_copy(
        update={"spec": TaskSpec.model_validate({"steps": [{"action": "navigate", "url": f"{site}/login"}]})}
    )
    runner, policy = build_runner(settings, ok, {})
    async with browser.context(policy, accept_downloads=True) as ctx:
        connection: Any = ctx._impl_obj._connection  # the client-side count this relies on
        out = await runner.run(ctx)
        assert out.status == "completed", out.error_message
        assert not [a for a in out.artifacts if a.name == "trace.zip"]
        assert connection._tracing_count == 0


async def test_traced_tasks_leave_nothing_behind_in_the_driver(
    site: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recording opens no stack session in the driver: Playwright's `tracing.start` made one per task, with a
    temporary directory, that only a stop ended; a success's recording is never stopped, so each task left
    both behind for the driver's life (and every later traced call was appended to all of them). A failure's
    trace is still saved, its actions and snapshots in it."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the driver's temporary directory (it inherits ours)
    host = BrowserHost(allowed_networks=parse_networks(["127.0.0.1/32"]))
    await host.start()
    monkeypatch.undo()
    try:
        ok = failing(site).model_copy(
            update={
                "spec": TaskSpec.model_validate({"steps": [{"action": "navigate", "url": f"{site}/login"}]})
            }
        )
        rt: Any = SimpleNamespace(settings=_settings(trace_snapshots=True))
        for task in (ok, ok, failing(site)):
            runner, policy = build_runner(rt.settings, task, {})
            prepared = host.prepare(_trace(rt, task))
            async with host.context(policy, accept_downloads=True, prepared=prepared) as ctx:
                out = await runner.run(ctx)
        assert out.status == "failed", out.error_message
        events = _events(next(a.data for a in out.artifacts if a.name == "trace.zip"))
        assert [e for e in events if e.get("type") == "before" and e.get("method") == "click"]
        assert [e for e in events if e.get("type") == "frame-snapshot"]
        await host.closed()
        assert sorted(p.name for p in tmp_path.glob("playwright-tracing-*")) == []
    finally:
        await host.close()


# --- TRACE_SNAPSHOTS=failure: no snapshot while the steps run, the failed page's DOM at the end -----------------


def _entries(trace: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(trace)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


async def test_failure_snapshots_record_the_failed_page_only(browser: BrowserHost, site: str) -> None:
    """The steps run without snapshots (the prepared recording has none); the failed task's trace still has
    every action with its error, and beside it a second recording (failure.trace, which the trace viewer loads
    with the first) holding the page as the failure left it."""
    rt: Any = SimpleNamespace(settings=_settings(trace_snapshots="failure"))
    assert _trace(rt, failing(site)) == TraceOptions(screenshots=False, snapshots=False, network=True)
    out, recording = await _run_prepared(
        browser, site, _trace(rt, failing(site)), {}, trace_snapshots="failure"
    )
    assert not recording, "the second recording was stopped"
    assert any(a.name == "failure.png" for a in out.artifacts)
    files = _entries(next(a.data for a in out.artifacts if a.name == "trace.zip"))
    steps = [json.loads(line) for line in files["trace.trace"].decode().splitlines()]
    assert [e for e in steps if e.get("type") == "before" and e.get("method") == "click"]
    assert any(e.get("type") == "after" and e.get("error") for e in steps)
    assert not [e for e in steps if e.get("type") == "frame-snapshot"], "no snapshot while the steps ran"
    failed = [json.loads(line) for line in files["failure.trace"].decode().splitlines()]
    snapshots = [e for e in failed if e.get("type") == "frame-snapshot"]
    assert snapshots, sorted({str(e.get("type")) for e in failed})
    assert '"password"' in json.dumps(snapshots), "the login form the click failed on"
    assert "failure.network" in files


async def test_failure_snapshots_of_a_task_with_a_secret_are_scrubbed(
    browser: BrowserHost, site: str
) -> None:
    secret = "correct horse battery"
    steps = [
        {"action": "navigate", "url": f"{site}/login"},
        {"action": "fill", "selector": "#password", "value": "{{secrets.PW}}"},
        {"action": "click", "selector": "#absent", "timeout_ms": 300},
    ]
    task = failing(site).model_copy(update={"spec": TaskSpec.model_validate({"steps": steps})})
    runner, policy = build_runner(_settings(trace_snapshots="failure"), task, {"PW": secret})
    async with browser.context(policy, accept_downloads=True) as ctx:
        out = await runner.run(ctx)
    assert out.status == "failed" and out.error_step == 2, out.error_message
    files = _entries(next(a.data for a in out.artifacts if a.name == "trace.zip"))
    assert [e for e in files["failure.trace"].decode().splitlines() if '"frame-snapshot"' in e]
    for name, content in files.items():
        assert secret.encode() not in content, name


# --- TRACE_MODE: which attempts record, and which keep their trace --------------------------------------------


def test_trace_mode_follows_playwright_tests_modes() -> None:
    def recording(attempt: int, **extra: Any) -> str:
        return _settings(**extra).trace_recording(attempt)

    assert recording(1) == "retain-on-failure"  # the default, as before
    assert recording(1, trace_on_failure=False) == "off"  # TRACE_ON_FAILURE=false still turns it off
    assert recording(1, trace_mode="on") == "on"
    assert recording(1, trace_mode="off") == "off"
    assert recording(1, trace_on_failure=False, trace_mode="retain-on-failure") == "retain-on-failure"
    assert [recording(a, trace_mode="on-first-retry") for a in (1, 2, 3)] == ["off", "on", "off"]


async def test_trace_mode_on_keeps_a_success_trace_and_on_first_retry_only_the_second_attempts(
    browser: BrowserHost, site: str
) -> None:
    ok = failing(site).model_copy(
        update={"spec": TaskSpec.model_validate({"steps": [{"action": "navigate", "url": f"{site}/login"}]})}
    )

    async def traced(task: TaskDispatch, **extra: Any) -> bool:
        settings = _settings(**extra)
        rt: Any = SimpleNamespace(settings=settings)
        runner, policy = build_runner(settings, task, {})
        prepared = browser.prepare(_trace(rt, task))
        async with browser.context(policy, accept_downloads=True, prepared=prepared) as ctx:
            out = await runner.run(ctx)
            assert take_trace(ctx) is None
        assert out.status == "completed", out.error_message
        kept = [a.data for a in out.artifacts if a.name == "trace.zip"]
        if kept:
            assert [e for e in _events(kept[0]) if e.get("type") == "before" and e.get("method") == "goto"]
        return bool(kept)

    assert not await traced(ok)  # retain-on-failure: a success keeps none
    assert await traced(ok, trace_mode="on")
    assert not await traced(ok, trace_mode="on-first-retry")
    assert await traced(ok.model_copy(update={"attempt": 2}), trace_mode="on-first-retry")
    assert not await traced(ok.model_copy(update={"attempt": 2}), trace_mode="off")


async def test_a_failure_dom_recording_that_does_not_start_does_not_hold_the_task(
    browser: BrowserHost, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded like every other failure artifact: the trace of the steps and the screenshot are kept."""

    calls: list[object] = []
    start_recording = browser_module.start_recording

    async def second_hangs(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 1:  # the steps' own recording
            await start_recording(*args)
            return
        await asyncio.sleep(3600)

    monkeypatch.setattr(runner_module, "start_recording", second_hangs)
    monkeypatch.setattr(runner_module, "FAILURE_DOM_START_SECONDS", 0.2)
    runner, policy = build_runner(_settings(trace_snapshots="failure"), failing(site), {})
    async with browser.context(policy, accept_downloads=True) as ctx:
        out = await asyncio.wait_for(runner.run(ctx), 30)
    assert out.status == "failed" and out.error_step == 1, out.error_message
    assert any(a.name == "failure.png" for a in out.artifacts)
    files = _entries(next(a.data for a in out.artifacts if a.name == "trace.zip"))
    assert "trace.trace" in files and "failure.trace" not in files
    assert len(calls) == 2
