"""The platform under test: `browserfleet_devkit.devstack.Platform` (what `make dev` runs) with no worker,
plus the pieces a benchmark needs around it: a token, a worker key for the benchmark worker, and a
listener on EVENTS that timestamps every task outcome."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.workers import CreateInviteRequest, InvitePublic, RegisterReply, RegisterRequest
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.embedded import free_port
from browserfleet_devkit.processes import stop_process
from nats.aio.client import Client as NatsClient
from nats.js.api import DeliverPolicy

from .common import ROOT, CpuMeter, cpu_seconds, tree_cpu_seconds

# The gateway limits each principal to 10 req/s by default (DESIGN.md §5). One benchmark principal
# submitting thousands of tasks a second would only measure the 429 path, so the limiter is off here.
# Likewise the scheduler caps how many tasks one organization runs at once (per plan): the benchmark org
# is an operator-sized tenant here, so the cap is lifted; admission itself still runs on every task.
_UNLIMITED = "1000000"
BENCH_ENV = {
    "RATE_LIMIT_PER_SECOND": "0",
    "DEFAULT_ORG_CONCURRENCY": _UNLIMITED,
    "PLAN_CONCURRENCY": '{"free": %s, "team": %s, "business": %s, "enterprise": %s}' % ((_UNLIMITED,) * 4),
    "LOG_LEVEL": "INFO",
    # the event-stream benchmark opens its thousand sockets with one admin's token
    "WS_MAX_CONNECTIONS_PER_PRINCIPAL": "0",
}


@contextmanager
def platform(log_tail: int = 200) -> Iterator[Platform]:
    """Whole platform in a scratch folder, no worker; stops and removes everything afterwards.
    The last log lines are kept and printed if startup fails."""
    tail: collections.deque[str] = collections.deque(maxlen=log_tail)
    with tempfile.TemporaryDirectory(prefix="bf-bench-", ignore_cleanup_errors=True) as home:
        os.chmod(home, 0o755)  # noqa: S103 - embedded PostgreSQL runs as its own user when we are root
        p = Platform(
            Path(home), workers=0, env=dict(BENCH_ENV), output=tail.append, nats_monitor_port=free_port()
        )
        try:
            p.start()
        except BaseException:
            print("\n".join(tail), file=sys.stderr)
            raise
        p.log_tail = tail  # type: ignore[attr-defined]
        try:
            yield p
        finally:
            p.stop()


# connections of the benchmark's own clients: what they send and receive is the load, not the platform's work
HARNESS_CONNECTIONS = frozenset({"bench-client", "bench-stages", "bench-setup"})


class BusCounter:
    """Messages each NATS connection sent to the server and received from it between start() and stop(), by
    connection name (NATS's /connz): deterministic where CPU figures are not, like transactions per task."""

    def __init__(self, p: Platform) -> None:
        nats = p.embedded_nats
        self.url = nats.monitor_url if nats is not None else None
        self._start: dict[str, tuple[int, int]] = {}
        self.delta: dict[str, tuple[int, int]] = {}

    def _read(self) -> dict[str, tuple[int, int]]:
        if self.url is None:
            return {}
        conns = httpx.get(f"{self.url}/connz", params={"limit": 10_000}, timeout=10).json()["connections"]
        # a service's several connections, and a reconnect's new one, count under its name
        out: dict[str, tuple[int, int]] = {}
        for c in conns:
            name = c.get("name") or "unnamed"
            sent, got = out.get(name, (0, 0))
            out[name] = (sent + c["in_msgs"], got + c["out_msgs"])
        return out

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        end = self._read()
        self.delta = {
            name: (sent - self._start.get(name, (0, 0))[0], got - self._start.get(name, (0, 0))[1])
            for name, (sent, got) in end.items()
        }

    def per(self, count: int) -> dict[str, Any] | None:
        """Per unit of work: each connection's messages sent and received, and the platform's total (the
        benchmark's own clients left out)."""
        if self.url is None or not count:
            return None
        by = {
            name: {"sent": round(sent / count, 2), "received": round(got / count, 2)}
            for name, (sent, got) in sorted(self.delta.items())
            if sent or got
        }
        platform = [v for k, v in by.items() if k not in HARNESS_CONNECTIONS]
        return {
            "by_connection": by,
            "sent": round(sum(v["sent"] for v in platform), 2),
            "received": round(sum(v["received"] for v in platform), 2),
        }


def cpu_meter(p: Platform, extra: dict[str, int] | None = None) -> CpuMeter:
    """A CPU meter over every service process of `p`, NATS, PostgreSQL (with its backends) and `extra`."""
    sources: dict[str, Any] = {}
    for name, pid in platform_pids(p, extra).items():
        if name == "postgres":
            sources[name] = lambda pid=pid: tree_cpu_seconds(pid)
        else:
            sources[name] = lambda pid=pid: cpu_seconds(pid)
    return CpuMeter(sources)


def platform_pids(p: Platform, extra: dict[str, int] | None = None) -> dict[str, int]:
    """Every process of `p` by name: its services, NATS and PostgreSQL's postmaster (the parent of its
    backends) when embedded, plus `extra`."""
    pids = {sp.name: sp.proc.pid for sp in p.processes}
    nats = p.embedded_nats
    if nats is not None and nats.proc is not None:
        pids["nats"] = nats.proc.pid
    pg = p.embedded_postgres
    if pg is not None and (pg.data_dir / "postmaster.pid").is_file():
        pids["postgres"] = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    return {**pids, **(extra or {})}


def python_pids(p: Platform, extra: dict[str, int] | None = None) -> dict[str, int]:
    """The platform's Python processes (what py-spy can read) by name, plus `extra`."""
    return {**{sp.name: sp.proc.pid for sp in p.processes}, **(extra or {})}


def login(p: Platform) -> str:
    boot = p.bootstrap
    assert boot is not None and boot.password, "a fresh platform prints the admin password"
    r = httpx.post(
        f"{p.gateway_url}/auth/login", json={"email": boot.admin_email, "password": boot.password}, timeout=30
    )
    r.raise_for_status()
    token: str = r.json()["access_token"]
    return token


async def worker_key(p: Platform, name: str) -> RegisterReply:
    """A worker identity the same way a real worker gets one: an invite traded for a key."""
    nc = await p.connect_admin("bench-setup")
    try:
        rpc = RpcClient(nc, timeout=15)
        invite: InvitePublic = await rpc.call(endpoints.Workers.CREATE_INVITE, CreateInviteRequest())
        reply: RegisterReply = await rpc.call(
            endpoints.Workers.REGISTER, RegisterRequest(invite_code=invite.code, name=name)
        )
        return reply
    finally:
        await nc.close()


class Outcomes:
    """Every task.completed / task.failed event of one org from EVENTS, with the time it arrived here."""

    def __init__(self, nc: NatsClient, org_id: str) -> None:
        self.nc = nc
        self.org_id = org_id
        self.done: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self._waiters: list[tuple[set[str], asyncio.Future[None]]] = []
        self._subs: list[Any] = []

    async def start(self) -> None:
        js = self.nc.jetstream()
        for event in ("task.completed", "task.failed"):
            sub = await js.subscribe(
                subjects.event(self.org_id, event),
                cb=self._on_event,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                pending_msgs_limit=1_000_000,
            )
            self._subs.append(sub)

    async def _on_event(self, msg: Any) -> None:
        now = time.time()
        doc = json.loads(msg.data)
        task_id = doc["data"]["task_id"]
        if task_id in self.done:
            return
        self.done[task_id] = now
        self.status[task_id] = doc["data"]["status"]
        for remaining, fut in self._waiters:
            remaining.discard(task_id)
            if not remaining and not fut.done():
                fut.set_result(None)

    async def wait_for(self, ids: set[str], timeout: float) -> bool:
        """Until every task in `ids` has an outcome (or `timeout` passes)."""
        remaining = ids - self.done.keys()
        if not remaining:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (remaining, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.remove(entry)

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()


class BenchWorkerProcess:
    """`python -m tests.bench.bench_worker` as its own process, like a real worker would be."""

    def __init__(self, p: Platform, key: str, worker_id: str, slots: int) -> None:
        self.starts_file = Path(tempfile.mkstemp(prefix="bf-bench-starts-", suffix=".json")[1])
        env = dict(os.environ)
        assert p.nats_url
        env.update(
            NATS_URL=p.nats_url,
            # the harness's own channel to it (`bench.worker.report`), which no worker identity may use
            BENCH_CONTROL_URL=p.admin_url,
            WORKER_KEY=key,
            WORKER_ID=worker_id,
            BENCH_SLOTS=str(slots),
            BENCH_STARTS_FILE=str(self.starts_file),
        )
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.bench.bench_worker"], cwd=ROOT, env=env)

    async def wait_ready(self, nc: NatsClient, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench worker exited with {self.proc.returncode}")
            try:
                await nc.request("bench.worker.report", b"", timeout=1)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def starts(self, nc: NatsClient) -> dict[str, float]:
        """When the worker began each task (claim granted), written out on request."""
        await nc.request("bench.worker.report", b"", timeout=30)
        data: dict[str, float] = json.loads(self.starts_file.read_text())
        return data

    def stop(self) -> None:
        stop_process(self.proc, 15)
        self.starts_file.unlink(missing_ok=True)
