"""Control-plane throughput and latency: browserfleet with the benchmark worker, then Celery + Redis.

Burst: N tasks submitted through `POST /api/v1/tasks` as fast as they are accepted (a fixed number of
concurrent requests); tasks/s from the first submit to the last `task.completed` event read from EVENTS.
Steady: a fixed offered rate for a fixed time; per task, submit → worker start (claim granted in the
worker) and submit → completed (the event arriving at the client). Wall clocks of one machine.
Memory: PSS and RSS of every process (PostgreSQL with its backends) idle just before the burst, and the
peak of each during it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from browserfleet_devkit.devstack import Platform

from . import stages
from .common import Result, Sizes, burst_figures, percentiles
from .keepalive import KeepAliveClient
from .memory import ProcessMemory
from .profiling import Profiler
from .stack import (
    BenchWorkerProcess,
    BusCounter,
    Outcomes,
    cpu_meter,
    login,
    platform_pids,
    python_pids,
    worker_key,
)

TASK_BODY: dict[str, Any] = {
    "title": "bench",
    "steps": [{"action": "navigate", "url": "http://127.0.0.1:9/"}],  # never opened: no browser here
}
WORKER_SLOTS = 128


class Submitter:
    """POSTs tasks on `connections` keep-alive connections (see keepalive.py for why not httpx)."""

    def __init__(self, base_url: str, token: str, connections: int) -> None:
        self.client = KeepAliveClient(base_url, token=token, connections=connections)
        self.body = json.dumps(TASK_BODY).encode()
        self.submitted: dict[str, float] = {}
        self.accepted: dict[str, float] = {}  # when its 201 arrived
        self.errors: dict[int, int] = {}

    async def submit(self) -> str | None:
        t0 = time.time()
        status, payload = await self.client.request("POST", "/api/v1/tasks", self.body)
        if status != 201:
            self.errors[status] = self.errors.get(status, 0) + 1
            return None
        task_id: str = json.loads(payload)["id"]
        self.submitted[task_id] = t0
        self.accepted[task_id] = time.time()
        return task_id

    async def close(self) -> None:
        await self.client.close()


async def _burst(sub: Submitter, outcomes: Outcomes, n: int, concurrency: int) -> dict[str, Any]:
    counter = iter(range(n))
    ids: set[str] = set()

    async def lane() -> None:
        for _ in counter:
            task_id = await sub.submit()
            if task_id:
                ids.add(task_id)

    first = time.time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    accepted_at = time.time()
    complete = await outcomes.wait_for(ids, timeout=max(120.0, n / 20))
    return burst_figures(n, ids, outcomes.done, complete, first, accepted_at)


async def _steady(
    sub: Submitter, outcomes: Outcomes, rate: float, seconds: float
) -> tuple[set[str], dict[str, Any]]:
    ids: set[str] = set()
    pending: set[asyncio.Task[None]] = set()
    total = int(rate * seconds)
    t0 = time.monotonic()

    async def one() -> None:
        task_id = await sub.submit()
        if task_id:
            ids.add(task_id)

    for i in range(total):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    offered_for = time.monotonic() - t0
    complete = await outcomes.wait_for(ids, timeout=120)
    return ids, {
        "offered_rate_per_s": rate,
        "seconds": seconds,
        "tasks": total,
        "accepted": len(ids),
        "achieved_submit_rate_per_s": round(len(ids) / offered_for, 1),
        "all_completed": complete,
    }


async def run_platform(p: Platform, sizes: Sizes, profile: Path | None = None) -> dict[str, Any]:
    assert p.nats_url and p.bootstrap
    token = login(p)
    reg = await worker_key(p, "bench-worker")
    worker = BenchWorkerProcess(p, reg.worker_key, reg.worker_id, WORKER_SLOTS)
    nc = await p.connect_admin("bench-client")
    outcomes = Outcomes(nc, p.bootstrap.org_id)
    await outcomes.start()
    await worker.wait_ready(nc)
    sub = Submitter(p.gateway_url, token, sizes.submit_concurrency)
    try:
        # warm-up: connections, JWKS cache, worker-auth cache, prepared statements
        warm = await _burst(sub, outcomes, 20, 8)
        if not warm["all_completed"]:
            raise RuntimeError(f"warm-up tasks did not complete: {warm}")
        # what the platform burns doing nothing (timers, polls, health): on a machine slowed by neighbours a
        # burst takes longer, and this share of its CPU per task grows with it
        idle = cpu_meter(p)
        idle.start()
        await asyncio.sleep(sizes.idle_seconds)
        idle.stop()
        everyone = platform_pids(p, {"bench-worker": worker.proc.pid})
        memory = ProcessMemory(everyone, total_of=set(everyone) - {"bench-worker"})
        idle_memory = memory.snapshot()
        meter = cpu_meter(p, {"bench-worker": worker.proc.pid})
        meter.start()
        xacts = _pg_transactions(p.database_url)
        bus = BusCounter(p)
        await asyncio.to_thread(bus.start)
        with memory, Profiler(profile, "burst", python_pids(p, {"bench-worker": worker.proc.pid})):
            burst = await _burst(sub, outcomes, sizes.burst_tasks, sizes.submit_concurrency)
        meter.stop()
        await asyncio.to_thread(bus.stop)
        burst["bus_messages_per_task"] = bus.per(burst["completed"])
        burst["memory_mib"] = memory.figures(idle_memory)
        await asyncio.sleep(1.2)  # PostgreSQL flushes its statistics about once a second
        if xacts is not None and (after := _pg_transactions(p.database_url)) is not None:
            # deterministic where CPU figures are not: database transactions (all services) per task
            burst["pg_transactions_per_task"] = round((after - xacts) / max(1, burst["completed"]), 2)
        # CPU per task of each process: steadier than tasks/s when the machine is shared
        burst["cpu_ms_per_task"] = meter.per(burst["completed"])
        burst["cpu_ms_per_task_platform"] = round(
            sum(v for k, v in burst["cpu_ms_per_task"].items() if k != "bench-worker"), 3
        )
        idle_ms_per_s = {k: round(1000 * v / sizes.idle_seconds, 2) for k, v in idle.used.items()}
        burst["idle_cpu_ms_per_s"] = idle_ms_per_s
        # the same less what the platform would have used idle over the burst's duration
        burst["cpu_ms_per_task_platform_net_of_idle"] = round(
            burst["cpu_ms_per_task_platform"]
            - sum(idle_ms_per_s.values()) * burst["seconds"] / max(1, burst["completed"]),
            3,
        )
        figures: dict[str, Any] = {"burst": burst}
        phases = [("steady", sizes.steady_rate, sizes.steady_seconds)]
        if sizes.light_rate:
            phases.insert(0, ("light", sizes.light_rate, sizes.light_seconds))
        for name, rate, seconds in phases:
            await asyncio.sleep(1.0)
            steady_meter = cpu_meter(p, {"bench-worker": worker.proc.pid})
            steady_bus = BusCounter(p)
            await asyncio.to_thread(steady_bus.start)
            steady_xacts = _pg_transactions(p.database_url)
            steady_meter.start()
            with Profiler(profile, name, python_pids(p, {"bench-worker": worker.proc.pid})):
                ids, phase = await _steady(sub, outcomes, rate, seconds)
            steady_meter.stop()
            # the phase's tasks have completed (_steady waits), so every message of theirs is counted
            await asyncio.to_thread(steady_bus.stop)
            phase["bus_messages_per_task"] = steady_bus.per(len(ids))
            await asyncio.sleep(1.2)  # PostgreSQL's statistics, as after the burst
            if steady_xacts is not None and (after := _pg_transactions(p.database_url)) is not None:
                phase["pg_transactions_per_task"] = round((after - steady_xacts) / max(1, len(ids)), 2)
            # at a moderate rate a message or a statement carries one task, not a burst's many
            phase["cpu_ms_per_task"] = steady_meter.per(len(ids))
            phase["cpu_ms_per_task_platform"] = round(
                sum(v for k, v in phase["cpu_ms_per_task"].items() if k != "bench-worker"), 3
            )
            starts = await worker.starts(nc)
            to_start = [starts[i] - sub.submitted[i] for i in ids if i in starts]
            to_done = [outcomes.done[i] - sub.submitted[i] for i in ids if i in outcomes.done]
            phase["submit_to_accepted"] = percentiles([sub.accepted[i] - sub.submitted[i] for i in ids])
            phase["submit_to_start"] = percentiles(to_start)
            phase["submit_to_completed"] = percentiles(to_done)
            phase["path"] = await stages.path(p.database_url, ids, sub.submitted, sub.accepted, starts)
            figures[name] = phase
        figures["stages"] = await stages.run(p, token, TASK_BODY, sizes.stage_calls)
        failed = sum(1 for s in outcomes.status.values() if s != "completed")
        return {**figures, "http_errors": sub.errors, "failed_tasks": failed}
    finally:
        await sub.close()
        await outcomes.stop()
        await nc.close()
        worker.stop()


def _pg_transactions(url: str | None) -> int | None:
    """Committed + rolled back transactions of the platform's database so far."""
    if not url:
        return None
    import psycopg

    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


def result(
    platform_figs: dict[str, Any] | None, celery: dict[str, Any] | None, sizes: Sizes, note: str | None
) -> Result:
    res = Result("control_plane")
    res.settings = {
        "burst_tasks": sizes.burst_tasks,
        "submit_concurrency": sizes.submit_concurrency,
        "steady_rate_per_s": sizes.steady_rate,
        "steady_seconds": sizes.steady_seconds,
        "light_rate_per_s": sizes.light_rate,
        "light_seconds": sizes.light_seconds if sizes.light_rate else None,
        "bench_worker_slots_per_priority": WORKER_SLOTS,
        "gateway_rate_limit": "off (RATE_LIMIT_PER_SECOND=0)",
        "org_concurrency_limit": "lifted (DEFAULT_ORG_CONCURRENCY, PLAN_CONCURRENCY)",
    }
    res.figures["browserfleet"] = platform_figs
    res.figures["celery_redis"] = celery
    if note:
        res.notes.append(note)
    if platform_figs and celery:
        ours, theirs = platform_figs, celery
        res.figures["ratios"] = {
            "throughput_browserfleet_over_celery": _ratio(
                ours["burst"]["tasks_per_s"], theirs["burst"]["tasks_per_s"]
            ),
            "start_p50_browserfleet_over_celery": _ratio(
                ours["steady"]["submit_to_start"]["p50_ms"], theirs["steady"]["submit_to_start"]["p50_ms"]
            ),
            "completed_p50_browserfleet_over_celery": _ratio(
                ours["steady"]["submit_to_completed"]["p50_ms"],
                theirs["steady"]["submit_to_completed"]["p50_ms"],
            ),
        }
    return res


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)
