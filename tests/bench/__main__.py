"""`make bench` / `python -m tests.bench [--quick] [--only NAME ...] [--out DIR]`.

Runs, in order: the platform (embedded NATS + PostgreSQL, every service, no worker) for the control
plane with the benchmark worker, the gateway read path, and the browser overhead (one real worker);
then the Celery + Redis peer. Prints a table and writes one JSON file per benchmark into DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .common import ROOT, Result, Sizes, fmt, machine, table

BENCHMARKS = ("control_plane", "gateway_reads", "browser_overhead")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="small sizes: every benchmark in well under a minute"
    )
    ap.add_argument("--only", nargs="*", choices=BENCHMARKS, default=list(BENCHMARKS))
    ap.add_argument("--no-peer", action="store_true", help="skip the Celery + Redis peer")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = ap.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    mode = "quick" if args.quick else "full"
    host = machine()
    started = time.monotonic()
    results: list[Result] = []
    failures: list[str] = []
    ours: dict[str, Any] | None = None

    from . import browser_overhead, control_plane, gateway_reads
    from .stack import cpu_meter, login, platform

    print(
        f"browserfleet benchmarks ({mode}) on {host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB",
        flush=True,
    )
    with platform() as p:
        print(f"platform up in {time.monotonic() - started:.1f}s at {p.gateway_url}", flush=True)
        if "control_plane" in args.only:
            try:
                ours = asyncio.run(control_plane.run_platform(p, sizes))
            except Exception:
                failures.append("control_plane")
                traceback.print_exc()
        if "gateway_reads" in args.only:
            try:
                task_id = asyncio.run(_one_task(p))
                results.append(gateway_reads.run(p.gateway_url, login(p), task_id, sizes, cpu_meter(p)))
            except Exception:
                failures.append("gateway_reads")
                traceback.print_exc()
        if "browser_overhead" in args.only:
            try:
                results.append(browser_overhead.run(p, sizes))
            except Exception:
                failures.append("browser_overhead")
                traceback.print_exc()
    if "control_plane" in args.only and "control_plane" not in failures:
        peer, note = (None, "Celery peer skipped (--no-peer)") if args.no_peer else _peer(sizes, failures)
        results.insert(0, control_plane.result(ours, peer, sizes, note))

    for res in results:
        res.write(args.out, mode, host)
    print()
    print(table(_rows(results)))
    print(
        f"\n{len(results)} result file(s) in {args.out} after {time.monotonic() - started:.0f}s", flush=True
    )
    if failures:
        print("failed: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


def _peer(sizes: Sizes, failures: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    from . import celery_peer

    try:
        return celery_peer.run(sizes)
    except Exception as exc:
        traceback.print_exc()
        failures.append("celery_peer")
        return None, f"Celery peer failed: {exc}"


async def _one_task(p: Any) -> str:
    """A task to read: the first one the control-plane run created, else a fresh one."""
    import httpx

    from .stack import login

    async with httpx.AsyncClient(
        base_url=p.gateway_url, headers={"authorization": f"Bearer {login(p)}"}
    ) as c:
        page = (await c.get("/api/v1/tasks", params={"limit": 1})).json()
        if page["items"]:
            return str(page["items"][0]["id"])
        r = await c.post(
            "/api/v1/tasks", json={"steps": [{"action": "navigate", "url": "http://127.0.0.1:9/"}]}
        )
        r.raise_for_status()
        return str(r.json()["id"])


def _rows(results: list[Result]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for res in results:
        f = res.figures
        if res.name == "control_plane":
            a, b = f.get("browserfleet") or {}, f.get("celery_redis") or {}

            def g(d: dict[str, Any], *path: str) -> Any:
                for k in path:
                    d = (d or {}).get(k)  # type: ignore[assignment]
                return d

            n = g(a, "burst", "tasks")
            rows.append(
                (
                    "control plane",
                    f"burst {n} tasks: tasks/s",
                    fmt(g(a, "burst", "tasks_per_s")),
                    fmt(g(b, "burst", "tasks_per_s")),
                )
            )
            rate = g(a, "steady", "offered_rate_per_s")
            for what, key in (("start", "submit_to_start"), ("completed", "submit_to_completed")):
                for p in ("p50", "p95", "p99"):
                    rows.append(
                        ("control plane", f"{fmt(rate)}/s: submit→{what} {p}",
                         fmt(g(a, "steady", key, f"{p}_ms"), " ms"), fmt(g(b, "steady", key, f"{p}_ms"), " ms"))
                    )  # fmt: skip
            light = g(a, "light", "offered_rate_per_s")
            if light:
                for what, key in (("start", "submit_to_start"), ("completed", "submit_to_completed")):
                    for p in ("p50", "p99"):
                        rows.append(
                            ("control plane", f"{fmt(light)}/s (light): submit→{what} {p}",
                             fmt(g(a, "light", key, f"{p}_ms"), " ms"), "")
                        )  # fmt: skip
            for proc in ("gateway", "scheduler", "postgres"):
                cpu = g(a, "burst", "cpu_ms_per_task", proc)
                if cpu is not None:
                    rows.append(("control plane", f"burst: {proc} CPU per task", fmt(cpu, " ms"), ""))
            xacts = g(a, "burst", "pg_transactions_per_task")
            if xacts is not None:
                rows.append(("control plane", "burst: database transactions per task", fmt(xacts), ""))
            ratios = f.get("ratios") or {}
            if ratios:
                rows.append(
                    (
                        "control plane",
                        "throughput ratio (ours/Celery)",
                        fmt(ratios.get("throughput_browserfleet_over_celery"), "x"),
                        "",
                    )
                )
        elif res.name == "gateway_reads":
            rows.append(
                (
                    "gateway reads",
                    f"GET task, {res.settings['connections']} conns: req/s",
                    fmt(f.get("requests_per_s")),
                    "",
                )
            )
            rows.append(("gateway reads", "p99", fmt(f.get("p99_ms"), " ms"), ""))
            for proc in ("gateway", "scheduler"):
                cpu = (f.get("cpu_ms_per_request") or {}).get(proc)
                if cpu is not None:
                    rows.append(("gateway reads", f"{proc} CPU per request", fmt(cpu, " ms"), ""))
        elif res.name == "browser_overhead":
            a, b = f["browserfleet"], f["plain_playwright"]
            rows.append(
                (
                    "browser",
                    f"{a['tasks']} steps tasks, 2 slots: wall",
                    fmt(a["wall_seconds"], " s"),
                    fmt(b["wall_seconds"], " s") + " (plain Playwright)",
                )
            )
            rows.append(("browser", "overhead ratio (ours/plain)", fmt(f.get("overhead_ratio"), "x"), ""))
    return rows


if __name__ == "__main__":
    sys.exit(main())
