"""Browser overhead: the same small steps task N times through the whole platform on one real worker with
2 slots, against a plain Playwright script with concurrency 2 and a fresh context per task.

Both use the same Chromium binary and launch flags; both are timed after a warm-up (the browser is up),
the platform from the first submit to the last `task.completed` event, the script from its first task
to its last.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from browserfleet_devkit.devstack import Platform

from .common import _TICKS, Result, Sizes
from .memory import MIB, PeakMemory, tree_memory
from .site import Site
from .stack import Outcomes, cpu_meter, login

SLOTS = 2
ROUNDS = 4  # batches per side, taking turns
ROW_SCRIPT = (
    "rows => rows.map(r => ({name: r.querySelector('.name').innerText.trim(),"
    " company: r.querySelector('.company').innerText.trim(), score: r.querySelector('.score').innerText.trim()}))"
)


def steps(url: str) -> list[dict[str, Any]]:
    return [
        {"action": "navigate", "url": url},
        {"action": "fill", "selector": "#q", "value": "browserfleet"},
        {"action": "click", "selector": "#go"},
        {
            "action": "extract",
            "name": "rows",
            "selector": "#results tbody tr",
            "fields": {"name": ".name", "company": ".company", "score": ".score"},
        },
    ]


def _stats() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent, command name, CPU seconds used by it and by its children it has reaped)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            head, rest = text.rsplit(")", 1)
            fields = rest.split()
        except (OSError, ValueError):
            continue
        # utime, stime, cutime, cstime: a renderer that ended counts in its reaper (the zygote)
        cpu = sum(int(f) for f in fields[11:15]) / _TICKS
        out[int(head.split(" ", 1)[0])] = (int(fields[1]), head.split("(", 1)[1], cpu)
    return out


def browser_cpu(root: int, *, own: bool = True) -> dict[str, float]:
    """CPU seconds so far of `root` (its own threads, when `own`), of the Playwright driver (node) below it
    and of that driver's descendants (Chromium, its ended renderers included)."""
    stats = _stats()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        kids.setdefault(ppid, []).append(pid)
    used = {"python": 0.0, "driver": 0.0, "chromium": 0.0}
    if own and root in stats:
        fields = Path(f"/proc/{root}/stat").read_text().rsplit(")", 1)[1].split()
        used["python"] = (int(fields[11]) + int(fields[12])) / _TICKS
    for driver in kids.get(root, []):
        if not stats[driver][1].startswith("node"):  # "node-MainThread"
            continue
        fields = Path(f"/proc/{driver}/stat").read_text().rsplit(")", 1)[1].split()
        used["driver"] += (int(fields[11]) + int(fields[12])) / _TICKS
        todo = list(kids.get(driver, []))
        used["browsers"] = float(sum(todo))  # which Chromium: one relaunched meanwhile took its CPU away
        while todo:
            pid = todo.pop()
            used["chromium"] += stats[pid][2]
            todo += kids.get(pid, [])
    return used


def cpu_per_task(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float | None]:
    """Milliseconds of CPU per task for each part, and their sum; Chromium's is None (and the sum with it)
    when the browser was relaunched in between (the worker recycles it every RECYCLE_AFTER_TASKS): the
    ended one's CPU is gone with it."""
    relaunched = before.get("browsers") != after.get("browsers")
    parts = [k for k in ("python", "driver", "chromium") if k in before and k in after]
    per: dict[str, float | None] = (
        {k: round(1000 * (after[k] - before[k]) / n, 1) for k in parts} if n else {}
    )
    if relaunched:
        per["chromium"] = None
    values = list(per.values())
    per["total"] = round(sum(v for v in values if v is not None), 1) if None not in values else None
    return per


def _merge(batches: list[dict[str, Any]]) -> dict[str, float | None]:
    """CPU per task over several batches: each part's milliseconds summed, divided by the tasks of the batches
    that measured it (a batch across a Chromium relaunch has no Chromium figure)."""
    parts: dict[str, list[tuple[float, int]]] = {}
    for b in batches:
        for k, v in b["cpu_ms_per_task"].items():
            if k != "total" and v is not None:
                parts.setdefault(k, []).append((v * b["tasks"], b["tasks"]))
    out: dict[str, float | None] = {
        k: round(sum(t for t, _ in xs) / sum(n for _, n in xs), 1) for k, xs in parts.items()
    }
    if "chromium" not in out:
        out["chromium"] = None
    values = list(out.values())
    out["total"] = round(sum(v for v in values if v is not None), 1) if None not in values else None
    return out


def _own_cpu() -> float:
    """CPU seconds of this process so far: while the platform runs a batch, its submits, the events it
    listens to and the site it serves (on the same cores as the worker; the plain side's count it as its own)."""
    t = os.times()
    return t.user + t.system


class PlatformSide:
    """Batches of the steps task submitted through the gateway to the one real worker, each timed from its
    first submit to its last `task.completed` event."""

    def __init__(self, p: Platform, site_url: str, worker_pid: int) -> None:
        self.p = p
        self.body = {"title": "bench-browser", "steps": steps(site_url)}
        self.worker_pid = worker_pid
        self.batches: list[dict[str, Any]] = []
        self.idle = (0, 0)
        self.peak = (0, 0)
        self.sample: dict[str, Any] = {}
        self.complete = True
        self.failed = 0
        self.errors: list[str] = []
        # the rest of the platform (gateway, scheduler, NATS, PostgreSQL, ...) on the same cores: not in the
        # ratio (the plain script has none of it), beside it to tell where a wall gap's CPU went
        self.services = cpu_meter(p)
        self.services.sources = {k: f for k, f in self.services.sources.items() if not k.startswith("worker")}

    async def __aenter__(self) -> PlatformSide:
        assert self.p.nats_url and self.p.bootstrap
        token = login(self.p)
        self.nc = await self.p.connect_admin("bench-browser")
        self.outcomes = Outcomes(self.nc, self.p.bootstrap.org_id)
        await self.outcomes.start()
        self.client = httpx.AsyncClient(
            base_url=self.p.gateway_url, headers={"authorization": f"Bearer {token}"}, timeout=60
        )
        warm = await self._submit(SLOTS)
        if not await self.outcomes.wait_for(warm, 180):
            raise RuntimeError("browser warm-up tasks did not finish (is the worker up?)")
        self.idle = tree_memory(self.worker_pid)  # Chromium up, nothing running
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.outcomes.stop()
        await self.nc.close()

    async def _submit(self, count: int) -> set[str]:
        sem = asyncio.Semaphore(16)

        async def one() -> str:
            async with sem:
                r = await self.client.post("/api/v1/tasks", json=self.body)
                r.raise_for_status()
                return str(r.json()["id"])

        return set(await asyncio.gather(*(one() for _ in range(count))))

    async def batch(self, n: int) -> dict[str, Any]:
        first = time.time()
        cpu_before = browser_cpu(self.worker_pid)
        self.services.start()
        harness = _own_cpu()
        with PeakMemory(self.worker_pid) as peak:
            ids = await self._submit(n)
            self.complete &= await self.outcomes.wait_for(ids, max(300.0, n * 3.0))
        cpu = cpu_per_task(cpu_before, browser_cpu(self.worker_pid), n)
        self.services.stop()
        services = round(sum(self.services.per(n).values()), 1)
        harness = round(1000 * (_own_cpu() - harness) / n, 1) if n else 0.0
        self.peak = (max(self.peak[0], peak.peak_pss), max(self.peak[1], peak.peak_rss))
        last = max((self.outcomes.done[i] for i in ids if i in self.outcomes.done), default=time.time())
        failed = [i for i in ids if self.outcomes.status.get(i) != "completed"]
        self.failed += len(failed)
        for task_id in failed[:5]:  # why, for whoever reads the figures
            doc = (await self.client.get(f"/api/v1/tasks/{task_id}")).json()
            self.errors.append(
                f"{doc.get('status')}: {doc.get('error_message')} (step {doc.get('error_step')})"
            )
        if not self.sample:
            self.sample = (await self.client.get(f"/api/v1/tasks/{next(iter(ids))}")).json()
        self.batches.append(
            {
                "tasks": n,
                "wall_seconds": round(last - first, 3),
                "cpu_ms_per_task": cpu,
                "services_cpu_ms_per_task": services,
                "harness_cpu_ms_per_task": harness,
            }
        )
        return self.batches[-1]

    def figures(self) -> dict[str, Any]:
        n = sum(b["tasks"] for b in self.batches)
        rows = ((self.sample.get("result") or {}).get("extracted") or {}).get("rows") or []
        return {
            "tasks": n,
            "completed": n - self.failed,
            "failed": self.failed,
            "errors": self.errors,
            "all_finished": self.complete,
            "wall_seconds": round(sum(b["wall_seconds"] for b in self.batches), 3),
            "batch_wall_seconds": [b["wall_seconds"] for b in self.batches],
            "rows_extracted_per_task": len(rows),
            "cpu_ms_per_task": _merge(self.batches),
            "batch_cpu_ms_per_task": [b["cpu_ms_per_task"].get("total") for b in self.batches],
            "services_cpu_ms_per_task": round(
                sum(b["services_cpu_ms_per_task"] * b["tasks"] for b in self.batches) / n, 1
            )
            if n
            else None,
            "harness_cpu_ms_per_task": round(
                sum(b["harness_cpu_ms_per_task"] * b["tasks"] for b in self.batches) / n, 1
            )
            if n
            else None,
            "worker_memory_mib": {
                "idle_pss": self.idle[0] // MIB,
                "idle_rss_sum": self.idle[1] // MIB,
                "peak_pss": self.peak[0] // MIB,
                "peak_rss_sum": self.peak[1] // MIB,
            },
        }


def _descendants(root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in _stats().items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo += kids.get(pid, [])
    return out


class PlainSide:
    """The plain Playwright script: a semaphore of 2, a fresh context per task, the worker's Chromium (its
    switches included) and driver options; each batch a run of its own (Playwright started, the browser
    launched, two warm-up tasks, then the batch timed from its first task to its last, then all closed: while
    the platform's batches run no second Chromium shares its pages, which would lower the worker's PSS)."""

    def __init__(self, site_url: str, worker_pid: int) -> None:
        self.site_url = site_url
        self.worker_pid = worker_pid
        self.batches: list[dict[str, Any]] = []
        self.failed = 0
        self.features: str | None = None

    async def _start(self) -> None:
        from browserfleet_worker import browser as host
        from browserfleet_worker.browser import (
            chromium_pids,
            disabled_features_arg,
            find_chromium,
            launch_flags,
            merged_features_arg,
        )
        from playwright.async_api import async_playwright

        sandbox = os.geteuid() != 0
        # the worker's driver options too (a tree before them starts Playwright plainly)
        start = getattr(host, "start_playwright", None)
        self.pw = await start() if start is not None else await async_playwright().start()
        exe = self.exe = find_chromium(os.environ.get("BROWSER_EXECUTABLE"), self.pw.chromium.executable_path)

        def ours() -> list[int]:  # this script's Chromium: the worker's descends from this process too
            platform = _descendants(self.worker_pid)
            return [p for p in chromium_pids(exe) if p not in platform]

        self.browser = await self.pw.chromium.launch(
            executable_path=exe, headless=True, args=launch_flags(sandbox=sandbox), chromium_sandbox=sandbox
        )
        # the same Chromium as the worker's, features it turns off included (as the worker does: launch,
        # read Playwright's own --disable-features, launch again with ours added): the ratio then measures
        # the platform, not a switch any script could copy
        default = disabled_features_arg(ours())
        merged = merged_features_arg(default)
        self.features = merged if default and merged else default
        if default and merged:
            await self.browser.close()
            self.browser = await self.pw.chromium.launch(
                executable_path=exe,
                headless=True,
                args=[*launch_flags(sandbox=sandbox), merged],
                ignore_default_args=[default],
                chromium_sandbox=sandbox,
            )
        self.sem = asyncio.Semaphore(SLOTS)
        await asyncio.gather(*(self.one() for _ in range(SLOTS)))  # warm-up, like the platform's

    async def _stop(self) -> None:
        try:
            await self.browser.close()
        finally:
            await self.pw.stop()

    async def one(self) -> list[dict[str, str]]:
        async with self.sem:
            ctx = await self.browser.new_context(accept_downloads=False)
            try:
                page = await ctx.new_page()
                await page.goto(self.site_url)
                await page.locator("#q").fill("browserfleet")
                await page.locator("#go").click()
                rows: list[dict[str, str]] = await page.locator("#results tbody tr").evaluate_all(ROW_SCRIPT)
                return rows
            finally:
                await ctx.close()

    async def batch(self, n: int) -> dict[str, Any]:
        await self._start()
        try:
            first = time.time()
            # the driver and Chromium of this script (the worker's are its own process's children)
            cpu_before = browser_cpu(os.getpid())
            results = await asyncio.gather(*(self.one() for _ in range(n)), return_exceptions=True)
            wall = time.time() - first
            cpu = cpu_per_task(cpu_before, browser_cpu(os.getpid()), n)
        finally:
            await self._stop()
        self.failed += sum(1 for r in results if isinstance(r, BaseException))
        self.batches.append({"tasks": n, "wall_seconds": round(wall, 3), "cpu_ms_per_task": cpu})
        return self.batches[-1]

    def figures(self) -> dict[str, Any]:
        return {
            "tasks": sum(b["tasks"] for b in self.batches),
            "failed": self.failed,
            "wall_seconds": round(sum(b["wall_seconds"] for b in self.batches), 3),
            "batch_wall_seconds": [b["wall_seconds"] for b in self.batches],
            "cpu_ms_per_task": _merge(self.batches),
            "batch_cpu_ms_per_task": [b["cpu_ms_per_task"].get("total") for b in self.batches],
            "executable": self.exe,
            "disable_features": self.features,
        }


def rounds_for(n: int) -> list[int]:
    """`n` tasks per side in ROUNDS batches (one batch when `n` is too small to split)."""
    k = ROUNDS if n >= ROUNDS * 10 else 1
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


async def interleaved(p: Platform, site_url: str, n: int, worker_pid: int) -> dict[str, Any]:
    """The two sides take turns, batch by batch (plain first in even rounds, the platform first in odd ones):
    a machine that gets faster or slower during the benchmark (other load, CPU boost) moves both alike."""
    plain = PlainSide(
        site_url, worker_pid
    )  # launched only once the worker's is up: it reads its own switches
    async with PlatformSide(p, site_url, worker_pid) as ours:
        pairs = []
        for i, size in enumerate(rounds_for(n)):
            sides = (plain, ours) if i % 2 == 0 else (ours, plain)
            walls = {id(side): (await side.batch(size))["wall_seconds"] for side in sides}
            pairs.append(round(walls[id(ours)] / walls[id(plain)], 3) if walls[id(plain)] else None)
        a, b = ours.figures(), plain.figures()
    ratios = [r for r in pairs if r is not None]
    return {
        "browserfleet": a,
        "plain_playwright": b,
        "overhead_ratio": round(a["wall_seconds"] / b["wall_seconds"], 3) if b["wall_seconds"] else None,
        "round_ratios": pairs,
        "overhead_ratio_median_of_rounds": round(statistics.median(ratios), 3) if ratios else None,
        "cpu_ratio": round(a["cpu_ms_per_task"]["total"] / b["cpu_ms_per_task"]["total"], 3)
        if a["cpu_ms_per_task"].get("total") and b["cpu_ms_per_task"].get("total")
        else None,
    }


def run(p: Platform, sizes: Sizes) -> Result:
    n = sizes.browser_tasks
    with Site() as site:
        # one real worker, default 2 slots, started only now (the control plane ran without it)
        p._spawn("worker", suffix="bench")
        worker = p.processes[-1].proc.pid
        figures = asyncio.run(interleaved(p, site.url, n, worker))
    res = Result("browser_overhead")
    res.settings = {
        "tasks": n,
        "rounds": len(rounds_for(n)),
        "concurrency": SLOTS,
        "steps": "navigate (127.0.0.1), fill, click, extract a 3-row table",
        "platform": "one worker process, 2 slots, fresh context per task",
        "plain": "one Playwright script, semaphore of 2, fresh context per task, the worker's Chromium switches "
        "and driver options",
        "order": "batches alternate: plain then platform, platform then plain, ...; the ratio is of the summed "
        "walls, the median of the rounds' ratios beside it",
    }
    res.figures = figures
    res.notes = [
        "PSS splits a shared page between every process that maps it, other Chromium processes on the machine "
        "included (another user's browser lowers the worker's figure): compare memory from a quiet machine; the "
        "RSS sum does not move with them",
        "on a loaded machine each hop waits for a CPU (the platform's path has more processes than the script's): "
        "wall ratios then swing by tens of percent from round to round, CPU per task holds better",
    ]
    return res
