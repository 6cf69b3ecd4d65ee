"""Keeps `make bench` from rotting: runs the quick mode as `make bench ARGS=--quick` would and checks that
every benchmark wrote its JSON with sane, non-zero figures. It asserts no speed: that is the benchmark's
job, and this machine may be busy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .common import ROOT

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]


def _load(out: Path, name: str) -> dict[str, Any]:
    path = out / f"{name}.json"
    assert path.is_file(), f"{name}.json was not written"
    doc: dict[str, Any] = json.loads(path.read_text())
    assert doc["mode"] == "quick"
    machine = doc["machine"]
    assert machine["cores"] >= 1 and machine["python"] and machine["packages"]["faststream"]
    return doc


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0


def test_quick_mode_writes_every_result(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=850,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "| benchmark" in run.stdout  # the table was printed

    cp = _load(out, "control_plane")["figures"]
    ours = cp["browserfleet"]
    assert ours["burst"]["all_completed"] and ours["burst"]["completed"] == ours["burst"]["tasks"]
    assert _positive(ours["burst"]["tasks_per_s"])
    assert ours["failed_tasks"] == 0 and not ours["http_errors"]
    for key in ("submit_to_start", "submit_to_completed"):
        figs = ours["steady"][key]
        assert all(_positive(figs[p]) for p in ("p50_ms", "p95_ms", "p99_ms"))
        assert figs["p50_ms"] <= figs["p95_ms"] <= figs["p99_ms"]
    stages = ours["stages"]
    assert stages["calls_per_stage"] > 0
    for key in (
        "http_create_task",
        "rpc_audit_begin_and_end",
        "rpc_scheduler_create_task",
        "jetstream_publish",
    ):
        assert _positive(stages[key]["p50_ms"]) and stages[key]["p50_ms"] <= stages[key]["p90_ms"], key
    mem = ours["burst"]["memory_mib"]
    procs = mem["per_process"]
    assert {"gateway", "scheduler", "nats", "postgres", "bench-worker"} <= procs.keys()
    for name, figs in [*procs.items(), ("total", mem["total"])]:
        assert all(_positive(figs[k]) for k in ("idle_pss", "idle_rss", "peak_pss", "peak_rss")), name
        # PSS splits shared pages where RSS counts them in full: never more
        assert figs["idle_pss"] <= figs["idle_rss"] and figs["peak_pss"] <= figs["peak_rss"], name
    assert "bench-worker" not in mem["total"]["of"] and "postgres" in mem["total"]["of"]
    # every task crosses the bus through the gateway (create) and the scheduler (create, claim, result);
    # the benchmark's own clients are not the platform's messages
    for phase in ("burst", "steady"):
        bus = ours[phase]["bus_messages_per_task"]
        assert bus["by_connection"]["gateway"]["sent"] >= 1 and bus["by_connection"]["scheduler"]["sent"] >= 3
        assert (
            bus["sent"] >= bus["by_connection"]["scheduler"]["sent"] + bus["by_connection"]["gateway"]["sent"]
        )
    assert _positive(ours["steady"]["cpu_ms_per_task_platform"])
    peer = cp["celery_redis"]
    if peer is not None:  # skipped (with a note) only where no redis-server can be had
        assert _positive(peer["burst"]["tasks_per_s"]) and peer["burst"]["all_completed"]
        assert _positive(peer["steady"]["submit_to_start"]["p50_ms"])
        assert _positive(cp["ratios"]["throughput_browserfleet_over_celery"])

    reads = _load(out, "gateway_reads")["figures"]
    assert _positive(reads["requests_per_s"]) and _positive(reads["p99_ms"])
    assert reads["non_2xx"] == 0

    stream = _load(out, "event_stream")["figures"]
    for kind in ("deflate", "plain"):
        figs = stream[kind]
        assert figs["all_delivered"] and figs["delivered"] == figs["sockets"] * figs["events"]
        assert _positive(figs["idle_sockets_per_gib"]) and _positive(figs["kib_per_idle_socket"])
        assert figs["delay"]["p50_ms"] <= figs["delay"]["p99_ms"] and _positive(figs["delay"]["p50_ms"])

    browser = _load(out, "browser_overhead")["figures"]
    assert browser["browserfleet"]["failed"] == 0 and browser["plain_playwright"]["failed"] == 0
    assert browser["browserfleet"]["rows_extracted_per_task"] == 3
    # the plain script runs the worker's Chromium: the features the worker turns off, off there too
    from browserfleet_worker.browser import DISABLED_FEATURES

    switch = browser["plain_playwright"]["disable_features"] or ""
    assert all(f in switch.split("=", 1)[-1].split(",") for f in DISABLED_FEATURES), switch
    assert _positive(browser["overhead_ratio"])
    mem = browser["browserfleet"]["worker_memory_mib"]
    assert _positive(mem["idle_pss"]) and _positive(mem["peak_pss"])
    # a process's PSS never exceeds its RSS (shared pages are split, not added)
    assert mem["idle_pss"] <= mem["idle_rss_sum"] and mem["peak_pss"] <= mem["peak_rss_sum"]

    up = _load(out, "startup")["figures"]
    assert len(up["runs"]) == 1
    for run_ in up["runs"]:
        assert _positive(run_["to_ready_line_s"]) and _positive(run_["printed_ready_s"])
        assert _positive(run_["cpu_s_to_ready"]) and run_["processes"] >= 10
        # the printed N counts from inside the command, so never (beyond its rounding) above the outside time
        assert run_["printed_ready_s"] <= run_["to_ready_line_s"] + 0.05
        steps = run_["milestones_s"]
        assert 0 < steps["nats_up"] <= steps["migrated"] <= run_["to_ready_line_s"]
        assert _positive(steps["worker_start_to_ready"])
        assert run_["first_task_status"] == "completed" and _positive(run_["ready_to_first_task_completed_s"])
        assert run_["exit_code"] == 0 and run_["left_behind"] == []
    assert _positive(up["to_ready_line_s_p50"])
