"""`make bench` / `python -m tests.bench [--quick] [--only NAME ...] [--out DIR]`.

Runs, in order: the platform (embedded NATS + PostgreSQL, every service, no worker) for the control
plane with the benchmark worker, the gateway read path, the event stream (WebSocket) and the browser
overhead (one real worker); then `make dev`'s start-up (fresh `browserfleet up` stacks, on their own); then
the Celery + Redis peer. Prints a table and writes one JSON file per benchmark into DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import stages
from .common import ROOT, Result, Sizes, fmt, machine, table

T = TypeVar("T")
BENCHMARKS = ("control_plane", "gateway_reads", "event_stream", "browser_overhead", "startup")
ON_PLATFORM = BENCHMARKS[:4]
_SIZE_FLAGS = {
    "burst_tasks": int,
    "steady_rate": float,
    "steady_seconds": float,
    "light_rate": float,
    "light_seconds": float,
    "read_seconds": float,
    "browser_tasks": int,
    "startup_runs": int,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="small sizes: every benchmark in well under a minute"
    )
    ap.add_argument("--only", nargs="*", choices=BENCHMARKS, default=list(BENCHMARKS))
    ap.add_argument("--no-peer", action="store_true", help="skip the Celery + Redis peer")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    ap.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy every service process during the burst and the read load; stacks and summaries into DIR",
    )
    # a size between --quick and full (a before/after comparison that fits a shared machine's quiet minutes)
    for name, kind in _SIZE_FLAGS.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=kind, metavar="N", help=f"override {name}")
    args = ap.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    overrides = {k: getattr(args, k) for k in _SIZE_FLAGS if getattr(args, k) is not None}
    sizes = dataclasses.replace(sizes, **overrides)
    mode = ("quick" if args.quick else "full") + (" (sizes overridden)" if overrides else "")
    host = machine()
    started = time.monotonic()
    results: list[Result] = []
    failures: list[str] = []
    ours: dict[str, Any] | None = None

    from . import browser_overhead, control_plane, event_stream, gateway_reads, startup
    from .stack import cpu_meter, login, platform, python_pids

    print(
        f"browserfleet benchmarks ({mode}) on {host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB",
        flush=True,
    )

    def measured(name: str, run: Callable[[], T], errors_of: Any = None) -> T | None:
        """`run`'s figures, or None with `name` failed (and the error lines of `errors_of`'s log shown)."""
        try:
            return run()
        except Exception:
            failures.append(name)
            traceback.print_exc()
            if errors_of is not None:
                _print_errors(errors_of)
            return None

    def gateway_reads_run(p: Any) -> Result:
        task_id = asyncio.run(_one_task(p))
        return gateway_reads.run(
            p.gateway_url, login(p), task_id, sizes, cpu_meter(p), (args.profile, python_pids(p))
        )

    if any(name in args.only for name in ON_PLATFORM):
        with platform() as p:
            print(f"platform up in {time.monotonic() - started:.1f}s at {p.gateway_url}", flush=True)
            if "control_plane" in args.only:
                ours = measured(
                    "control_plane",
                    lambda: asyncio.run(control_plane.run_platform(p, sizes, args.profile)),
                    p,
                )
            runs: list[tuple[str, Callable[[], Result], Any]] = [
                ("gateway_reads", lambda: gateway_reads_run(p), p),
                ("event_stream", lambda: event_stream.run(p, sizes), None),
                ("browser_overhead", lambda: browser_overhead.run(p, sizes), None),
            ]
            for name, run, errors_of in runs:
                if name in args.only and (res := measured(name, run, errors_of)) is not None:
                    results.append(res)
    # on its own: the benchmark platform's processes would share the machine with the stacks it starts
    if "startup" in args.only and (res := measured("startup", lambda: startup.run(sizes))) is not None:
        results.append(res)
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


def _print_errors(p: Any) -> None:
    """The platform's last log lines that tell of an error (a benchmark failed while it ran)."""
    lines = list(getattr(p, "log_tail", ()))
    marks = ("Traceback", "Error", "ERROR", "Exception", "  File ")
    shown = [line for line in lines if any(m in line for m in marks)]
    if shown:
        print("\n".join(["platform log (errors):", *shown[-60:]]), file=sys.stderr)


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
                for what, key in (
                    ("accepted (201)", "submit_to_accepted"),
                    ("start", "submit_to_start"),
                    ("completed", "submit_to_completed"),
                ):
                    for p in ("p50", "p99"):
                        rows.append(
                            ("control plane", f"{fmt(light)}/s (light): submit→{what} {p}",
                             fmt(g(a, "light", key, f"{p}_ms"), " ms"), "")
                        )  # fmt: skip
            for key, label in stages.ROWS:
                figs = g(a, "stages", key) or {}
                if figs:
                    rows.append(
                        ("control plane", f"one at a time: {label} p50", fmt(figs.get("p50_ms"), " ms"), "")
                    )
            for proc, cpu in (g(a, "burst", "cpu_ms_per_task") or {}).items():
                rows.append(("control plane", f"burst: {proc} CPU per task", fmt(cpu, " ms"), ""))
            total = g(a, "burst", "cpu_ms_per_task_platform")
            if total is not None:
                rows.append(("control plane", "burst: CPU per task, platform total", fmt(total, " ms"), ""))
            net = g(a, "burst", "cpu_ms_per_task_platform_net_of_idle")
            if net is not None:
                rows.append(("control plane", "burst: the same net of idle CPU", fmt(net, " ms"), ""))
            steady_cpu = g(a, "steady", "cpu_ms_per_task") or {}
            if steady_cpu:
                busiest = ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(steady_cpu.items(), key=lambda kv: -kv[1])
                )
                rows.append(("control plane", f"{fmt(rate)}/s: CPU per task by process (ms)", busiest, ""))
                rows.append(
                    (
                        "control plane",
                        f"{fmt(rate)}/s: CPU per task, platform total",
                        fmt(g(a, "steady", "cpu_ms_per_task_platform"), " ms"),
                        "",
                    )
                )
            for phase, label in (("burst", "burst"), ("steady", f"{fmt(rate)}/s")):
                bus = g(a, phase, "bus_messages_per_task") or {}
                if bus:
                    by = bus.get("by_connection") or {}
                    each = ", ".join(
                        f"{k} {v['sent']:g}/{v['received']:g}"
                        for k, v in sorted(by.items(), key=lambda kv: -(kv[1]["sent"] + kv[1]["received"]))
                    )
                    rows.append(
                        (
                            "control plane",
                            f"{label}: bus messages per task, sent / received",
                            f"{bus['sent']:g} / {bus['received']:g} ({each})",
                            "",
                        )
                    )
            idle = g(a, "burst", "idle_cpu_ms_per_s") or {}
            if idle:
                rows.append(
                    ("control plane", "idle: platform CPU ms per s", fmt(round(sum(idle.values()), 1)), "")
                )
            rows += _memory_rows(g(a, "burst", "memory_mib") or {})
            xacts = g(a, "burst", "pg_transactions_per_task")
            if xacts is not None:
                rows.append(("control plane", "burst: database transactions per task", fmt(xacts), ""))
            xacts = g(a, "steady", "pg_transactions_per_task")
            if xacts is not None:
                rows.append(
                    ("control plane", f"{fmt(rate)}/s: database transactions per task", fmt(xacts), "")
                )
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
            for proc, cpu in (f.get("cpu_ms_per_request") or {}).items():
                if cpu:
                    rows.append(("gateway reads", f"{proc} CPU per request", fmt(cpu, " ms"), ""))
        elif res.name == "event_stream":
            rows += _event_stream_rows(f)
        elif res.name == "startup":
            runs = f["runs"]
            each = ", ".join(fmt(r["to_ready_line_s"]) for r in runs)
            rows += [
                ("make dev", f"{len(runs)} fresh starts: launch → ready line p50 (each)",
                 f"{fmt(f['to_ready_line_s_p50'], ' s')} ({each})", ""),
                ("make dev", "the \"ready in N s\" it printed, p50",
                 fmt(f["printed_ready_s_p50"], " s"), ""),
                ("make dev", "CPU of all its processes until ready, p50",
                 fmt(f.get("cpu_s_to_ready_p50"), " s"), ""),
                ("make dev", "ready → first task completed, p50",
                 fmt(f["ready_to_first_task_completed_s_p50"], " s"), ""),
            ]  # fmt: skip
            steps = f.get("milestones_s_p50") or {}
            if steps:
                rows.append(
                    ("make dev", "launch → NATS / PostgreSQL / migrated, p50; worker spawn → ready",
                     " / ".join(fmt(steps.get(k), " s") for k in ("nats_up", "postgres_up", "migrated"))
                     + f"; {fmt(steps.get('worker_start_to_ready'), ' s')}", "")
                )  # fmt: skip
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
            mem = a.get("worker_memory_mib") or {}
            if mem:
                rows.append(
                    ("browser", "worker + Chromium, 2 slots: PSS idle / peak",
                     f"{mem['idle_pss']} / {mem['peak_pss']} MiB", "")
                )  # fmt: skip
                rows.append(
                    ("browser", "the same, RSS summed over processes: idle / peak",
                     f"{mem['idle_rss_sum']} / {mem['peak_rss_sum']} MiB", "")
                )  # fmt: skip
    return rows


def _memory_rows(mem: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    def cell(m: dict[str, Any]) -> str:
        return f"{m['idle_rss']:,} / {m['peak_rss']:,} MiB (PSS {m['idle_pss']:,} / {m['peak_pss']:,})"

    rows = [
        ("control plane", f"memory: {proc} RSS idle / burst peak", cell(m), "")
        for proc, m in (mem.get("per_process") or {}).items()
    ]
    if mem.get("total"):
        rows.append(("control plane", "memory: platform total RSS idle / burst peak", cell(mem["total"]), ""))
    return rows


def _event_stream_rows(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for kind, label in (("deflate", "permessage-deflate"), ("plain", "no compression")):
        k = f.get(kind) or {}
        n = k.get("sockets")
        delay = k.get("delay") or {}
        rows += [
            ("event stream", f"{label}: idle sockets per GiB", fmt(k.get("idle_sockets_per_gib")), ""),
            (
                "event stream",
                f"{label}: memory per idle socket",
                fmt(k.get("kib_per_idle_socket"), " KiB"),
                "",
            ),
            ("event stream", f"{label}: EVENTS→{n} sockets p50", fmt(delay.get("p50_ms"), " ms"), ""),
            ("event stream", f"{label}: EVENTS→{n} sockets p99", fmt(delay.get("p99_ms"), " ms"), ""),
            (
                "event stream",
                f"{label}: gateway CPU per delivery",
                fmt(k.get("gateway_cpu_us_per_delivery"), " µs"),
                "",
            ),
        ]
    return rows


if __name__ == "__main__":
    sys.exit(main())
