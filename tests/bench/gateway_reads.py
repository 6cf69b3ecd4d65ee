"""Gateway read path: authenticated `GET /api/v1/tasks/{id}` from a load generator in another process.

`wrk` (installed with apt-get when root and missing) with 64 connections; without it, a Python
generator (`loadgen.py`) in a second process does the same with httpx.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from .common import ROOT, CpuMeter, Result, Sizes
from .profiling import Profiler


def ensure_wrk() -> str | None:
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, check=False, capture_output=True)
    return shutil.which("wrk")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return round(float(m.group(1)) * _UNITS[m.group(2)], 2)


def parse_wrk(out: str) -> dict[str, Any]:
    figs: dict[str, Any] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        figs["requests_per_s"] = round(float(m.group(1)), 1)
    for p in ("50", "90", "99"):
        if m := re.search(rf"^\s+{p}(?:\.000)?%\s+(\S+)", out, re.M):
            figs[f"p{p}_ms"] = _ms(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        figs["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    figs["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    figs["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return figs


def run(
    gateway_url: str,
    token: str,
    task_id: str,
    sizes: Sizes,
    meter: CpuMeter | None = None,
    profile: tuple[Path | None, dict[str, int]] = (None, {}),
) -> Result:
    url = f"{gateway_url}/api/v1/tasks/{task_id}"
    headers = {"authorization": f"Bearer {token}"}
    check = httpx.get(url, headers=headers, timeout=10)
    check.raise_for_status()
    res = Result("gateway_reads")
    res.settings = {
        "connections": sizes.read_connections,
        "seconds": sizes.read_seconds,
        "request": "GET /api/v1/tasks/{id} with a Bearer JWT",
        "gateway": "one uvicorn process (httptools, uvloop)",
    }
    wrk = ensure_wrk()
    if meter is not None:
        meter.start()
    with Profiler(profile[0], "reads", profile[1]):
        _load(wrk, url, token, sizes, res)
    if meter is not None:
        meter.stop()
        res.figures["cpu_ms_per_request"] = meter.per(int(res.figures.get("requests") or 0))
    return res


def _load(wrk: str | None, url: str, token: str, sizes: Sizes, res: Result) -> None:
    if wrk:
        cmd = [
            wrk, "-t2", f"-c{sizes.read_connections}", f"-d{sizes.read_seconds:.0f}s", "--latency",
            "-H", f"Authorization: Bearer {token}", url,
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=sizes.read_seconds + 60).stdout
        res.figures = parse_wrk(out)
        res.settings["generator"] = "wrk -t2 (second process)"
    else:
        env = {**os.environ, "BENCH_URL": url, "BENCH_TOKEN": token}
        cmd = [
            sys.executable,
            "-m",
            "tests.bench.loadgen",
            str(sizes.read_connections),
            str(sizes.read_seconds),
        ]
        out = subprocess.run(
            cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=sizes.read_seconds + 60
        ).stdout
        res.figures = json.loads(out)
        res.settings["generator"] = "tests/bench/loadgen.py (httpx, second process)"
        res.notes.append("wrk not available; the Python generator saturates sooner than wrk would")
