"""Fallback HTTP load generator (when wrk is unavailable): N keep-alive connections for T seconds.

Usage: BENCH_URL=... BENCH_TOKEN=... python -m tests.bench.loadgen <connections> <seconds>; prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import httpx

from .common import percentiles


async def main(connections: int, seconds: float) -> None:
    url, token = os.environ["BENCH_URL"], os.environ["BENCH_TOKEN"]
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        headers={"authorization": f"Bearer {token}"}, limits=limits, timeout=30
    ) as client:
        end = time.monotonic() + seconds

        async def lane() -> None:
            nonlocal errors
            while time.monotonic() < end:
                t0 = time.perf_counter()
                r = await client.get(url)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1

        started = time.monotonic()
        await asyncio.gather(*(lane() for _ in range(connections)))
        took = time.monotonic() - started
    p = percentiles(latencies, (50, 90, 99))
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "requests_per_s": round(len(latencies) / took, 1),
                "non_2xx": errors,
                "socket_errors": 0,
                **{k: v for k, v in p.items() if k != "max_ms"},
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
