"""The organization's event stream (WebSocket): idle sockets per GiB of gateway memory, and the delay from an
event published on EVENTS to its arrival at every one of N subscribed sockets.

Each measurement gets a gateway process of its own, started next to the platform's (another replica on
another port: the gateway keeps no state, so any replica serves the stream), so its memory holds nothing but
the sockets measured. N clients (`wsclient.Client`, in this process) sign in with the admin's token, open
the stream and subscribe to the organization; the replica's resident memory before and after, divided by
N, is the cost of one idle subscribed socket. Then events are published on EVENTS one at a time (the next
once every socket has the last), each stamped with its publish time, and each socket's arrival time is
taken as its frame comes in: the delay covers NATS, the gateway's reader and fan-out, the socket writes,
the loopback network and this client's read. Twice: with permessage-deflate (what browsers and the
`websockets` library negotiate: a compressor per socket) and without.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from browserfleet_contracts import subjects
from browserfleet_contracts.events import EventEnvelope, EventType
from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.embedded import free_port
from browserfleet_devkit.processes import stop_process

from .common import Result, Sizes, cpu_seconds, percentiles
from .stack import login
from .wsclient import Client, open_client

EVENT = (
    EventType.SECURITY_REQUEST_BLOCKED
)  # what the clients subscribe to: no task of the platform's mixes in
GIB = 1024**3


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def replica(p: Platform) -> Iterator[tuple[str, int]]:
    """Another gateway process on the platform's NATS, as `make dev` would run a second replica."""
    env = p._service_env("gateway")
    port = free_port()
    env.update(GATEWAY_PORT=str(port), LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [sys.executable, "-m", "browserfleet_gateway", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway replica exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("gateway replica not ready")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        stop_process(proc, 15)


async def _subscribe(client: Client, org_id: str) -> None:
    while True:
        client.send({"type": "SUBSCRIBE", "channel": f"org:{org_id}", "types": [EVENT.value]})
        reply = await client.wait_for("SUBSCRIBED", 30) if await _ready(client) else None
        if reply is not None:
            return
        await asyncio.sleep(0.5)  # the replica's reader is still starting (ERROR unavailable)


async def _ready(client: Client) -> bool:
    """SUBSCRIBED, or False on ERROR `unavailable` (the next message after SUBSCRIBE says which)."""
    seen = len(client.messages)
    deadline = time.monotonic() + 30
    while len(client.messages) == seen:
        if time.monotonic() > deadline:
            raise TimeoutError("no answer to SUBSCRIBE")
        await asyncio.sleep(0.01)
    last = client.messages[-1][1]
    if b'"unavailable"' in last:
        client.messages.clear()
        return False
    return True


async def _open(url: str, token: str, org_id: str, count: int, *, deflate: bool) -> list[Client]:
    clients: list[Client] = []
    for start in range(0, count, 50):  # a browser-like trickle, not one thundering herd
        batch = await asyncio.gather(
            *(open_client(url, token, deflate=deflate) for _ in range(start, min(count, start + 50)))
        )
        await asyncio.gather(*(_subscribe(c, org_id) for c in batch))
        clients += batch
    return clients


async def _measure(
    p: Platform, url: str, pid: int, token: str, org_id: str, sizes: Sizes, *, deflate: bool
) -> dict[str, Any]:
    nc = await p.connect_admin("bench-event-stream")
    js = nc.jetstream()
    try:
        warm = await _open(url, token, org_id, 5, deflate=deflate)  # code paths loaded before the baseline
        for c in warm:
            c.close()
        await asyncio.sleep(1.0)
        before = rss_bytes(pid)
        clients = await _open(url, token, org_id, sizes.ws_clients, deflate=deflate)
        gc.collect()
        await asyncio.sleep(1.0)
        after = rss_bytes(pid)
        per_socket = max(1, (after - before) // len(clients))

        base = [len(c.messages) for c in clients]
        published: list[float] = []
        cpu_before = cpu_seconds(pid) or 0.0
        for i in range(sizes.ws_events):
            envelope = EventEnvelope(
                id=f"bench-{uuid.uuid4().hex}",
                type=EVENT,
                org_id=org_id,
                occurred_at=datetime.now(UTC),
                data={
                    "bench": i,
                    "task_id": "bench",
                    "attempt": 1,
                    "host": "bench.invalid",
                    "reason": "bench",
                },
            )
            payload = envelope.model_dump_json().encode()
            published.append(time.time())
            await js.publish(subjects.event(org_id, EVENT), payload, headers={"Nats-Msg-Id": envelope.id})
            deadline = time.monotonic() + 30
            while any(len(c.messages) < b + i + 1 for c, b in zip(clients, base, strict=True)):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.05)  # the next event starts on a quiet gateway
        cpu_used = (cpu_seconds(pid) or 0.0) - cpu_before
        delays: list[float] = []
        delivered = 0
        for c, b in zip(clients, base, strict=True):
            for arrived, raw in c.messages[b:]:
                doc = json.loads(raw)
                if doc.get("type") == "EVENT":
                    delivered += 1
                    delays.append(arrived - published[doc["data"]["bench"]])
        expected = len(clients) * sizes.ws_events
        for c in clients:
            c.close()
        await asyncio.sleep(0.5)
        return {
            "sockets": len(clients),
            "rss_before_mib": round(before / 2**20, 1),
            "rss_after_mib": round(after / 2**20, 1),
            "kib_per_idle_socket": round(per_socket / 1024, 1),
            "idle_sockets_per_gib": int(GIB // per_socket),
            "events": sizes.ws_events,
            "delivered": delivered,
            "all_delivered": delivered == expected,
            "delay": percentiles(delays),
            "gateway_cpu_us_per_delivery": round(1e6 * cpu_used / max(1, delivered), 1),
        }
    finally:
        await nc.close()


def run(p: Platform, sizes: Sizes) -> Result:
    token = login(p)
    boot = p.bootstrap
    assert boot is not None
    figures: dict[str, Any] = {}
    for kind, deflate in (("deflate", True), ("plain", False)):
        with replica(p) as (url, pid):
            figures[kind] = asyncio.run(_measure(p, url, pid, token, boot.org_id, sizes, deflate=deflate))
    return Result(
        name="event_stream",
        figures=figures,
        settings={
            "sockets": sizes.ws_clients,
            "events": sizes.ws_events,
            "event_type": EVENT.value,
            "client": "tests/bench/wsclient.py, in the benchmark process",
            "gateway": "a replica process of its own per measurement (uvicorn, uvloop, httptools)",
            "cpus": os.cpu_count(),
        },
        notes=[
            "idle: resident memory of the replica after N subscribed sockets minus before, over N",
            "delay: publish on EVENTS (admin connection) to the frame's arrival at each socket, one event at a "
            "time; every socket's arrival counts, so p99 is the slowest sockets of each fan-out",
            "deflate: permessage-deflate negotiated as browsers do (one compressor per socket on the gateway)",
        ],
    )
