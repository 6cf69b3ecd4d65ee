"""What `sync_interval: always` costs: JetStream publish throughput and latency with NATS's default (fsync
every 2 minutes) and with every write fsynced before its ack, on one server (the dev stack's embedded NATS)
and on a 3-server cluster with an R3 stream (k8s/nats). Real nats-server processes on 127.0.0.1, a file-
storage stream, 512-byte messages (a task message's size), one client.

    uv run --frozen python -m tests.bench.nats_sync [--quick] [--out DIR]

Two loads: one publish at a time (each waits for its ack: a request's latency) and 64 in flight (throughput).
Writes bench-results/nats_sync.json and prints a table for README "Performance".
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from browserfleet_devkit.natscluster import NatsCluster
from nats.js.api import StorageType, StreamConfig

from .common import ROOT, Result, fmt, machine, percentiles

PAYLOAD = b"x" * 512
SINGLE = (
    'server_name: "{name}"\nlisten: "{host}:{client_port}"\nhttp: "{host}:{monitor_port}"\n'
    'jetstream {{\n  store_dir: "{store_dir}"\n{sync}}}\n'
)


async def _measure(
    urls: list[str], replicas: int, sequential: int, pipelined: int, inflight: int
) -> dict[str, Any]:
    nc = await nats.connect(servers=urls, name="bench")
    try:
        js = nc.jetstream(timeout=30)
        await js.add_stream(
            StreamConfig(name="BENCH", subjects=["bench.>"], storage=StorageType.FILE, num_replicas=replicas)
        )
        for _ in range(50):  # warm up: connections, the stream's leader, the first blocks
            await js.publish("bench.warm", PAYLOAD)
        latencies: list[float] = []
        started = time.perf_counter()
        for i in range(sequential):
            t = time.perf_counter()
            await js.publish(f"bench.seq.{i % 16}", PAYLOAD)
            latencies.append(time.perf_counter() - t)
        seq_seconds = time.perf_counter() - started

        gate = asyncio.Semaphore(inflight)

        async def one(i: int) -> None:
            async with gate:
                await js.publish(f"bench.pipe.{i % 16}", PAYLOAD)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(pipelined)))
        pipe_seconds = time.perf_counter() - started
        return {
            "sequential_msgs_per_s": round(sequential / seq_seconds, 1),
            "sequential_latency": percentiles(latencies),
            "pipelined_msgs_per_s": round(pipelined / pipe_seconds, 1),
        }
    finally:
        await nc.close()


def _run(kind: str, sync: str | None, sizes: tuple[int, int, int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bf-nats-sync-") as tmp:
        if kind == "single":
            line = f"  sync_interval: {sync}\n" if sync else ""
            template = SINGLE.replace("{sync}", line.replace("{", "{{").replace("}", "}}"))
            cluster = NatsCluster(Path(tmp), size=1, template=template)
            replicas = 1
        else:
            cluster = NatsCluster(Path(tmp), size=3, sync_interval=sync)
            replicas = 3
        with cluster:
            return asyncio.run(_measure(cluster.urls, replicas, *sizes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.nats_sync", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = ap.parse_args(argv)
    sizes = (200, 2_000, 64) if args.quick else (2_000, 20_000, 64)
    figures: dict[str, Any] = {}
    rows = []
    for kind in ("single", "cluster"):
        for sync in (None, "always"):
            label = (
                f"{'1 server, R1' if kind == 'single' else '3 servers, R3'}, sync {sync or 'default (2 min)'}"
            )
            found = _run(kind, sync, sizes)
            figures[f"{kind}_{sync or 'default'}"] = found
            lat = found["sequential_latency"]
            rows.append(
                f"| {label} | {fmt(found['sequential_msgs_per_s'])} | {lat['p50_ms']} / {lat['p99_ms']} ms "
                f"| {fmt(found['pipelined_msgs_per_s'])} |"
            )
            print(rows[-1], flush=True)
    result = Result(
        "nats_sync",
        figures=figures,
        settings={
            "sequential": sizes[0],
            "pipelined": sizes[1],
            "in_flight": sizes[2],
            "payload_bytes": len(PAYLOAD),
        },
        notes=["file storage in a temporary folder of this machine's disk; one client on 127.0.0.1"],
    )
    path = result.write(args.out, "quick" if args.quick else "full", machine())
    print("\n| NATS | one at a time: msgs/s | ack p50 / p99 | 64 in flight: msgs/s |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
