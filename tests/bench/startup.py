"""`make dev` start-up: `browserfleet up` (what `make dev` runs after its install step) on a fresh data
folder and a free gateway port, with its real worker and Chromium, several times.

Each run is timed from launching the command to the line it prints once a worker is ready to take tasks
("browserfleet is ready in N s"), and that N is kept too (it counts from the platform's start(), so
without the interpreter's start and the CLI's imports). The claim is then tried: one task submitted as
the printed admin, timed from the ready line to its `completed`. Then the stack is stopped as Ctrl-C stops
it, and every process it started (the services, the worker and its Chromium, NATS, PostgreSQL, which
pg_ctl detaches) must be gone; one left behind fails the benchmark after it has been killed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
from browserfleet_devkit.embedded import free_port

from .common import ROOT, Result, Sizes

READY = re.compile(r"browserfleet is ready in ([0-9.]+)s")
# the launcher's own lines on the way there, by when they came: where a start spends its time
MILESTONES = {
    "nats_up": re.compile(r"platform \| NATS \("),
    "postgres_up": re.compile(r"platform \| PostgreSQL \("),
    "migrated": re.compile(r"platform \| migrations applied"),
}
WORKER_OWN = re.compile(r"platform \| \S+ ready to take tasks \(([0-9.]+) s after it started\)")
BANNER_FIELD = re.compile(r"^\s+(admin|password)\s+(\S+)")
START_TIMEOUT = 240.0
TASK_TIMEOUT = 120.0
STOP_TIMEOUT = 90.0
# what `up` must not inherit from the benchmark's environment: an outside NATS / PostgreSQL or data folder
_NOT_INHERITED = ("NATS_URL", "DATABASE_URL", "BROWSERFLEET_HOME")


def command() -> list[str]:
    """The `browserfleet` script of this environment (what `uv run browserfleet` runs), else the same
    entry point through this interpreter."""
    script = Path(sys.executable).with_name("browserfleet")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from browserfleet_sdk.cli import main; sys.exit(main())"]


class _Lines:
    """The launcher's output, each line with the monotonic time it arrived; the last lines kept for errors."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.queue: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self.tail: collections.deque[str] = collections.deque(maxlen=80)
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.tail.append(line)
            self.queue.put((time.monotonic(), line))
        self.queue.put(None)

    def next(self, deadline: float) -> tuple[float, str] | None:
        """The next line, or None once the output ended; TimeoutError at `deadline`."""
        try:
            return self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None

    def join(self) -> None:
        self._thread.join(10)


def _wait_ready(lines: _Lines, launched: float) -> dict[str, Any]:
    """Reads up to the banner's end: when the ready line came, the N it printed, the admin's login."""
    deadline = launched + START_TIMEOUT
    found: dict[str, Any] = {}
    while True:
        item = lines.next(deadline)
        if item is None:
            raise RuntimeError("`browserfleet up` exited before it was ready:\n" + "\n".join(lines.tail))
        at, line = item
        for name, pattern in MILESTONES.items():
            if name not in found and pattern.search(line):
                found[name] = round(at - launched, 2)
        if (m := WORKER_OWN.search(line)) is not None:
            found["worker_start_to_ready"] = float(m.group(1))
        if (m := READY.search(line)) is not None:
            found.update(at=at, printed=float(m.group(1)))
        elif "at" in found and (m := BANNER_FIELD.match(line)) is not None:
            found[m.group(1)] = m.group(2)
        elif "at" in found and line.startswith("=" * 20):
            return found


def _first_task(url: str, email: str, password: str) -> tuple[str, float]:
    """One task through the fresh stack: its final status and when it ended (monotonic)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/auth/login", json={"email": email, "password": password})
        r.raise_for_status()
        c.headers["authorization"] = f"Bearer {r.json()['access_token']}"
        r = c.post(
            "/api/v1/tasks",
            json={"title": "startup", "steps": [{"action": "navigate", "url": f"{url}/health/ready"}]},
        )
        r.raise_for_status()
        task_id = r.json()["id"]
        deadline = time.monotonic() + TASK_TIMEOUT
        while time.monotonic() < deadline:
            # the dev stack keeps the gateway's per-principal limit (10 req/s): polls stay under it
            status = str(c.get(f"/api/v1/tasks/{task_id}").json()["status"])
            if status in ("completed", "failed", "cancelled", "timed_out"):
                return status, time.monotonic()
            time.sleep(0.2)
    raise TimeoutError(f"the first task did not finish in {TASK_TIMEOUT}s")


def _ours(home: Path, launcher: psutil.Process) -> list[psutil.Process]:
    """The launcher's descendants and any process naming the data folder (PostgreSQL is pg_ctl's child,
    not the launcher's)."""
    procs: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        procs.update((p.pid, p) for p in launcher.children(recursive=True))
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != launcher.pid and str(home) in " ".join(p.info["cmdline"] or ()):
            procs.setdefault(p.pid, p)
            with contextlib.suppress(psutil.Error):  # PostgreSQL's backends name no folder
                procs.update((c.pid, c) for c in p.children(recursive=True))
    return list(procs.values())


def _kind(p: psutil.Process) -> str:
    """What a process of the stack is: its service, chromium, postgres, nats, or the launcher."""
    cmd: list[str] = p.cmdline()
    module = next((a for a in cmd if a.startswith("browserfleet_")), None)
    if module is not None:
        return module.removeprefix("browserfleet_").replace("_", "-")
    first = f"{p.name()} {cmd[0] if cmd else ''}"
    for part, kind in (
        ("chrom", "chromium"),
        ("headless", "chromium"),
        ("postgres", "postgres"),
        ("nats", "nats"),
    ):
        if part in first:
            return kind
    return "launcher"


def _cpu_seconds(launcher: psutil.Process, procs: list[psutil.Process]) -> dict[str, float]:
    """CPU used so far by the launcher and `procs`, by kind, with the children each has waited for (the
    launcher's pg_ctl and initdb, with initdb's own): on a shared machine it moves much less than the
    seconds to ready."""
    by: dict[str, float] = {}
    for p in [launcher, *procs]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            kind = "launcher" if p.pid == launcher.pid else _kind(p)
            by[kind] = by.get(kind, 0.0) + t.user + t.system + t.children_user + t.children_system
    return {k: round(v, 2) for k, v in sorted(by.items(), key=lambda kv: -kv[1])}


def _stop(proc: subprocess.Popen[bytes], seen: list[psutil.Process], home: Path) -> tuple[float, list[str]]:
    """Ctrl-C to the launcher and its wait; then what is still alive of `seen` (or names `home`), killed."""
    began = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    took = time.monotonic() - began
    left: dict[int, psutil.Process] = {}
    for p in seen:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left[p.pid] = p
        except psutil.Error:
            continue
    for p in psutil.process_iter(["cmdline"]):
        if str(home) in " ".join(p.info["cmdline"] or ()):
            left.setdefault(p.pid, p)
    names = []
    for p in left.values():
        try:
            names.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            p.kill()
        except psutil.Error:
            continue
    return took, names


def one_start() -> dict[str, Any]:
    """One `browserfleet up` on a fresh folder: its figures (seconds) and the processes left behind."""
    with tempfile.TemporaryDirectory(prefix="bf-bench-up-", ignore_cleanup_errors=True) as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - embedded PostgreSQL runs as its own user when we are root
        home = Path(tmp)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env["PYTHONUNBUFFERED"] = "1"
        launched = time.monotonic()
        proc = subprocess.Popen(
            [*command(), "up", "--home", str(home), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        lines = _Lines(proc.stdout)
        launcher = psutil.Process(proc.pid)
        seen: list[psutil.Process] = []
        # the machine may be shared: how busy it was says how far to trust this run's seconds
        figures: dict[str, Any] = {"load_1min_at_launch": round(os.getloadavg()[0], 2)}
        try:
            ready = _wait_ready(lines, launched)
            figures["to_ready_line_s"] = round(ready["at"] - launched, 2)
            figures["printed_ready_s"] = ready["printed"]
            # seconds from launch to each step; the worker's own start (spawn → its first beat) ends the wait
            figures["milestones_s"] = {k: ready.get(k) for k in (*MILESTONES, "worker_start_to_ready")}
            seen = _ours(home, launcher)
            figures["processes"] = len(seen) + 1
            cpu = _cpu_seconds(launcher, seen)
            figures["cpu_s_to_ready"] = round(sum(cpu.values()), 2)
            figures["cpu_s_to_ready_by"] = cpu
            status, ended = _first_task(f"http://127.0.0.1:{port}", ready["admin"], ready["password"])
            figures["first_task_status"] = status
            figures["ready_to_first_task_completed_s"] = round(ended - ready["at"], 2)
        except BaseException:
            time.sleep(0.5)  # the lines that tell why, still on their way through the launcher
            print("`browserfleet up` said, last:\n" + "\n".join(lines.tail), file=sys.stderr, flush=True)
            raise
        finally:
            seen = [*seen, *_ours(home, launcher)]
            took, left = _stop(proc, seen, home)
            lines.join()
        figures["stop_s"] = round(took, 2)
        figures["exit_code"] = proc.returncode
        figures["left_behind"] = left
        return figures


def run(sizes: Sizes) -> Result:
    res = Result("startup")
    res.settings = {
        "runs": sizes.startup_runs,
        "command": " ".join([Path(command()[0]).name, "up", "--home <fresh folder>", "--port <free port>"]),
        "workers": 1,
    }
    runs = []
    for index in range(sizes.startup_runs):
        figures = one_start()
        print(f"startup run {index + 1}/{sizes.startup_runs}: {figures}", flush=True)
        runs.append(figures)
    res.figures["runs"] = runs
    for key in (
        "to_ready_line_s",
        "printed_ready_s",
        "cpu_s_to_ready",
        "ready_to_first_task_completed_s",
        "stop_s",
    ):
        res.figures[f"{key}_p50"] = round(statistics.median(r[key] for r in runs), 2)
    res.figures["milestones_s_p50"] = {
        k: round(statistics.median(v), 2)
        for k in runs[0]["milestones_s"]
        if (v := [r["milestones_s"][k] for r in runs if r["milestones_s"][k] is not None])
    }
    res.notes.append(
        "to_ready_line_s: from launching the command to its ready line (make dev adds `uv run` and its"
        " install step before it); printed_ready_s: the N of that line, from the platform's start()"
    )
    left = [p for r in runs for p in r["left_behind"]]
    if left:
        raise RuntimeError(f"`browserfleet up` left processes behind after Ctrl-C: {left}")
    if any(r["first_task_status"] != "completed" or r["exit_code"] != 0 for r in runs):
        raise RuntimeError(f"a start did not run its first task or did not stop cleanly: {runs}")
    return res
