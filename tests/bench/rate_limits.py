"""What a shared rate limit costs a request: `browserfleet_gateway.ratelimit.Limiter` deciding through the NATS KV
bucket `rate_limits` (RATE_LIMIT_STORE=nats, the default) against the per-replica `RateLimiter`
(RATE_LIMIT_STORE=local). A real embedded nats-server on 127.0.0.1; limits so high that nothing is refused,
so every decision writes.

    uv run --frozen python -m tests.bench.rate_limits [--quick] [--out DIR]

Cases: a principal's next request (its entry's revision known: one KV write); a principal's first request on
this replica (a read, then a write); two replicas taking turns on one principal (each write finds the other's
revision: a conflict, a read and a second write); 64 principals at once (throughput). Figures: latency of a
decision, the gateway process's CPU per decision and NATS's. Writes bench-results/rate_limits.json.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from browserfleet_core.messaging import BusCredentials, connect
from browserfleet_devkit.embedded import EmbeddedNats
from browserfleet_gateway.ratelimit import Limiter, RateLimiter, open_bucket

from .common import ROOT, Result, cpu_seconds, machine, percentiles

HIGH = 1e9  # a rate nothing reaches: every decision admits, and writes


async def _timed(n: int, decide: Callable[[int], Awaitable[Any]], nats_pid: int) -> dict[str, Any]:
    latencies: list[float] = []
    cpu0, nats0, started = time.process_time(), cpu_seconds(nats_pid) or 0.0, time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await decide(i)
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "decisions_per_s": round(n / wall, 1),
        "latency": percentiles(latencies),
        "p50_us": round(ordered[len(ordered) // 2] * 1e6, 1),
        "p99_us": round(ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)] * 1e6, 1),
        "gateway_cpu_us": round((time.process_time() - cpu0) / n * 1e6, 1),
        "nats_cpu_us": round(((cpu_seconds(nats_pid) or 0.0) - nats0) / n * 1e6, 1),
    }


async def _bench(url: str, nats_pid: int, n: int) -> dict[str, Any]:
    one = await connect(url, name="gw-1", credentials=BusCredentials())
    two = await connect(url, name="gw-2", credentials=BusCredentials())
    try:
        a = Limiter(await open_bucket(one, timeout=0.5), HIGH, 10**9, prefix="a")
        b = Limiter(await open_bucket(two, timeout=0.5), HIGH, 10**9, prefix="a")  # the same keys: replicas
        local = RateLimiter(HIGH, 10**9)
        run = uuid.uuid4().hex[:8]
        for i in range(100):  # warm up
            await a.hit(f"warm:{run}:{i % 4}")
        figures: dict[str, Any] = {}

        async def local_hit(i: int) -> None:
            local.hit(f"user:{run}")

        figures["local"] = await _timed(n, local_hit, nats_pid)
        figures["shared_known"] = await _timed(n, lambda i: a.hit(f"user:{run}"), nats_pid)
        figures["shared_first"] = await _timed(n, lambda i: a.hit(f"new:{run}:{i}"), nats_pid)
        figures["shared_two_replicas"] = await _timed(
            n, lambda i: (a if i % 2 == 0 else b).hit(f"turns:{run}"), nats_pid
        )

        gate = asyncio.Semaphore(64)

        async def concurrent(i: int) -> None:
            async with gate:
                await a.hit(f"many:{run}:{i % 64}")

        started = time.perf_counter()
        await asyncio.gather(*(concurrent(i) for i in range(n * 2)))
        figures["shared_64_at_once_per_s"] = round(n * 2 / (time.perf_counter() - started), 1)
        return figures
    finally:
        await one.close()
        await two.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.bench.rate_limits", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = ap.parse_args(argv)
    n = 300 if args.quick else 3_000
    with tempfile.TemporaryDirectory(prefix="bf-rate-") as tmp:
        server = EmbeddedNats(Path(tmp) / "nats" / "data")
        url = server.start()
        try:
            assert server.proc is not None
            figures = asyncio.run(_bench(url, server.proc.pid, n))
        finally:
            server.stop()
    labels = {
        "local": "RATE_LIMIT_STORE=local (per replica)",
        "shared_known": "shared: a principal's next request",
        "shared_first": "shared: a principal's first request on this replica",
        "shared_two_replicas": "shared: two replicas taking turns on one principal",
    }
    print("\n| decision | p50 / p99 | gateway CPU | NATS CPU | decisions/s (one at a time) |")
    print("|---|---|---|---|---|")
    for key, label in labels.items():
        f = figures[key]
        print(
            f"| {label} | {f['p50_us']:,.0f} / {f['p99_us']:,.0f} µs | {f['gateway_cpu_us']:,.0f} µs "
            f"| {f['nats_cpu_us']:,.0f} µs | {f['decisions_per_s']:,.0f} |"
        )
    print(f"| shared: 64 principals at once | | | | {figures['shared_64_at_once_per_s']:,.0f} |")
    result = Result(
        "rate_limits", figures=figures, settings={"decisions": n}, notes=["embedded NATS, 127.0.0.1"]
    )
    print(f"\nwritten: {result.write(args.out, 'quick' if args.quick else 'full', machine())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
