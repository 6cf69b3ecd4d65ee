"""Browser overhead: the same small steps task N times through the whole platform on one real worker with
2 slots, against a plain Playwright script with concurrency 2 and a fresh context per task.

Both use the same Chromium binary and launch flags; both are timed after a warm-up (the browser is up),
the platform from the first submit to the last `task.completed` event, the script from its first task
to its last.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
from browserfleet_devkit.devstack import Platform

from .common import _TICKS, Result, Sizes
from .memory import MIB, PeakMemory, tree_memory
from .site import Site
from .stack import Outcomes, login

SLOTS = 2
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


async def platform_run(p: Platform, site_url: str, n: int, worker_pid: int) -> dict[str, Any]:
    assert p.nats_url and p.bootstrap
    token = login(p)
    nc = await p.connect_admin("bench-browser")
    outcomes = Outcomes(nc, p.bootstrap.org_id)
    await outcomes.start()
    body = {"title": "bench-browser", "steps": steps(site_url)}
    async with httpx.AsyncClient(
        base_url=p.gateway_url, headers={"authorization": f"Bearer {token}"}, timeout=60
    ) as client:

        async def submit(count: int) -> set[str]:
            sem = asyncio.Semaphore(16)

            async def one() -> str:
                async with sem:
                    r = await client.post("/api/v1/tasks", json=body)
                    r.raise_for_status()
                    return str(r.json()["id"])

            return set(await asyncio.gather(*(one() for _ in range(count))))

        try:
            warm = await submit(SLOTS)
            if not await outcomes.wait_for(warm, 180):
                raise RuntimeError("browser warm-up tasks did not finish (is the worker up?)")
            idle_pss, idle_rss = tree_memory(worker_pid)  # Chromium up, nothing running
            first = time.time()
            cpu_before = browser_cpu(worker_pid)
            with PeakMemory(worker_pid) as peak:
                ids = await submit(n)
                complete = await outcomes.wait_for(ids, max(300.0, n * 3.0))
            cpu = cpu_per_task(cpu_before, browser_cpu(worker_pid), n)
            last = max(outcomes.done[i] for i in ids if i in outcomes.done)
            failed = sum(1 for i in ids if outcomes.status.get(i) != "completed")
            sample = (await client.get(f"/api/v1/tasks/{next(iter(ids))}")).json()
        finally:
            await outcomes.stop()
            await nc.close()
    rows = ((sample.get("result") or {}).get("extracted") or {}).get("rows") or []
    return {
        "tasks": n,
        "completed": n - failed,
        "failed": failed,
        "all_finished": complete,
        "wall_seconds": round(last - first, 3),
        "rows_extracted_per_task": len(rows),
        "cpu_ms_per_task": cpu,
        "worker_memory_mib": {
            "idle_pss": idle_pss // MIB,
            "idle_rss_sum": idle_rss // MIB,
            "peak_pss": peak.peak_pss // MIB,
            "peak_rss_sum": peak.peak_rss // MIB,
        },
    }


async def plain_run(site_url: str, n: int) -> dict[str, Any]:
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
    failed = 0
    # the worker's driver options too (a tree before them starts Playwright plainly)
    start = getattr(host, "start_playwright", None)
    pw = await start() if start is not None else await async_playwright().start()
    try:
        exe = find_chromium(os.environ.get("BROWSER_EXECUTABLE"), pw.chromium.executable_path)
        platforms = set(chromium_pids(exe))  # the worker's Chromium descends from this process too
        browser = await pw.chromium.launch(
            executable_path=exe, headless=True, args=launch_flags(sandbox=sandbox), chromium_sandbox=sandbox
        )
        # the same Chromium as the worker's, features it turns off included (as the worker does: launch,
        # read Playwright's own --disable-features, launch again with ours added): the ratio then measures
        # the platform, not a switch any script could copy
        default = disabled_features_arg([p for p in chromium_pids(exe) if p not in platforms])
        merged = merged_features_arg(default)
        if default and merged:
            await browser.close()
            browser = await pw.chromium.launch(
                executable_path=exe,
                headless=True,
                args=[*launch_flags(sandbox=sandbox), merged],
                ignore_default_args=[default],
                chromium_sandbox=sandbox,
            )
        sem = asyncio.Semaphore(SLOTS)

        async def one() -> list[dict[str, str]]:
            async with sem:
                ctx = await browser.new_context(accept_downloads=False)
                try:
                    page = await ctx.new_page()
                    await page.goto(site_url)
                    await page.locator("#q").fill("browserfleet")
                    await page.locator("#go").click()
                    rows: list[dict[str, str]] = await page.locator("#results tbody tr").evaluate_all(
                        ROW_SCRIPT
                    )
                    return rows
                finally:
                    await ctx.close()

        await asyncio.gather(*(one() for _ in range(SLOTS)))  # warm-up, like the platform's
        first = time.time()
        # the driver and Chromium of this script (the platform's worker is not started yet)
        cpu_before = browser_cpu(os.getpid())
        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        wall = time.time() - first
        cpu = cpu_per_task(cpu_before, browser_cpu(os.getpid()), n)
        failed = sum(1 for r in results if isinstance(r, BaseException))
        await browser.close()
    finally:
        await pw.stop()
    return {
        "tasks": n,
        "failed": failed,
        "wall_seconds": round(wall, 3),
        "cpu_ms_per_task": cpu,
        "executable": exe,
        "disable_features": merged if default and merged else default,
    }


def run(p: Platform, sizes: Sizes) -> Result:
    n = sizes.browser_tasks
    with Site() as site:
        plain = asyncio.run(plain_run(site.url, n))
        # one real worker, default 2 slots, started only now (the control plane ran without it)
        p._spawn("worker", suffix="bench")
        worker = p.processes[-1].proc.pid
        ours = asyncio.run(platform_run(p, site.url, n, worker))
    res = Result("browser_overhead")
    res.settings = {
        "tasks": n,
        "concurrency": SLOTS,
        "steps": "navigate (127.0.0.1), fill, click, extract a 3-row table",
        "platform": "one worker process, 2 slots, fresh context per task",
        "plain": "one Playwright script, semaphore of 2, fresh context per task, the worker's Chromium switches "
        "and driver options",
    }
    res.figures = {
        "browserfleet": ours,
        "plain_playwright": plain,
        "overhead_ratio": round(ours["wall_seconds"] / plain["wall_seconds"], 3)
        if plain["wall_seconds"]
        else None,
    }
    return res
