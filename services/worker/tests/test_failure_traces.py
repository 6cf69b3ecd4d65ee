"""What a failed task's trace records, as the worker configures it (real Chromium): every action with its error,
and DOM snapshots (with the network log) unless TRACE_SNAPSHOTS is off (they are recorded on every task, failed
or not, so an operator may trade them for CPU)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from browserfleet_contracts.tasks import TaskDispatch, TaskSpec
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.execution import build_runner
from browserfleet_worker.settings import WorkerSettings


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
    full = await trace_events(browser, site)
    assert [e for e in full if e.get("type") == "frame-snapshot"]

    lean = await trace_events(browser, site, trace_snapshots=False)
    # the failed click is in the trace, with its error
    clicks = [e for e in lean if e.get("type") == "before" and e.get("method") == "click"]
    assert clicks, sorted({str(e.get("type")) for e in lean})
    assert any(e.get("type") == "after" and e.get("error") for e in lean)
    assert not [e for e in lean if e.get("type") == "frame-snapshot"]
