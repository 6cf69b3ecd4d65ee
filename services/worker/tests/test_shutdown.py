"""Graceful shutdown and drain on a real NATS server with real Chromium.

SIGTERM (a real worker process) and a drain request (`workers.drain.<worker_id>`, in process): the worker
stops pulling, lets a running task that finishes within SHUTDOWN_GRACE_SECONDS finish and report, and hands
a task that does not back to JetStream (nak) so another worker gets it at once. Worker-gateway and the
scheduler are stood in by small in-test responders on their request/reply subjects (other services).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.tasks import ClaimRequest, TaskDispatch, TaskUpdateMessage
from browserfleet_contracts.workers import DrainReply
from browserfleet_core.streams import ensure_pool_consumers, ensure_streams
from browserfleet_devkit.testing import service_process, unique_name
from browserfleet_worker.app import run
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from .conftest import dispatch, registering_worker


@dataclass
class Stand:
    nc: NatsClient
    pool: str
    worker_id: str
    claims: list[str] = field(default_factory=list)
    updates: dict[str, list[TaskUpdateMessage]] = field(default_factory=lambda: defaultdict(list))
    started: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    results: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))

    async def dispatch(self, task_id: str, steps: list[dict[str, Any]]) -> None:
        await dispatch(self.nc.jetstream(), self.pool, task_id, steps, timeout_seconds=300)

    async def waiting(self) -> dict[str, int]:
        """What is left on the pool's `normal` consumer: task id -> delivery count (taken by this test)."""
        sub = await self.nc.jetstream().pull_subscribe_bind(
            durable=subjects.task_run_consumer(self.pool, "normal"), stream=subjects.TASKS_STREAM
        )
        found: dict[str, int] = {}
        with contextlib.suppress(TimeoutError):
            for msg in await sub.fetch(10, timeout=2):
                found[TaskDispatch.model_validate_json(msg.data).task_id] = msg.metadata.num_delivered
                await msg.ack()
        await sub.unsubscribe()
        return found


@pytest.fixture
async def stand(nats_url: str) -> AsyncIterator[Stand]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    state = Stand(nc=nc, pool=unique_name("pool"), worker_id=unique_name("w"))
    await ensure_pool_consumers(js, state.pool)

    async def register(msg: Msg) -> None:
        await msg.respond(
            json.dumps(
                {
                    "worker_id": state.worker_id,
                    "worker_key": "sk_worker_t",
                    "api_key": "sk_worker_t",
                    "pool": state.pool,
                    "pool_name": state.pool,
                    "org_id": None,
                    "tags": [],
                }
            ).encode()
        )

    async def heartbeat(msg: Msg) -> None:
        await msg.respond(b'{"ok": true}')

    async def claim(msg: Msg) -> None:
        task_id = ClaimRequest.model_validate_json(msg.data).task_id
        state.claims.append(task_id)
        await msg.respond(json.dumps({"granted": True, "worker_id": state.worker_id}).encode())
        state.started[task_id].set()  # granted: the task is running (the scheduler's task.started)

    async def on_update(msg: Msg) -> None:
        update = TaskUpdateMessage.model_validate_json(msg.data)
        state.updates[update.task_id].append(update)
        if update.kind == "result":  # log lines ship while a task runs
            state.results[update.task_id].set()

    subs = [
        await nc.subscribe(endpoints.Workers.REGISTER.subject, cb=register),
        await nc.subscribe(endpoints.Workers.HEARTBEAT.subject, cb=heartbeat),
        await nc.subscribe(endpoints.Scheduler.CLAIM.subject, cb=claim),
        await nc.subscribe("tasks.updates.>", cb=on_update),
    ]
    yield state
    for sub in subs:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    await nc.close()


def steps(site: str, *, hang: bool) -> list[dict[str, Any]]:
    last: dict[str, Any] = (
        {"action": "wait_for", "selector": "#never", "timeout_ms": 120_000}
        if hang
        else {"action": "wait_for", "delay_ms": 300}
    )
    return [{"action": "navigate", "url": f"{site}/login"}, last]


async def start_two(stand: Stand, site: str) -> tuple[str, str]:
    quick, slow = unique_name("quick"), unique_name("slow")
    await stand.dispatch(slow, steps(site, hang=True))
    await stand.dispatch(quick, steps(site, hang=False))
    await asyncio.wait_for(stand.started[slow].wait(), 60)
    await asyncio.wait_for(stand.started[quick].wait(), 60)
    return quick, slow


async def test_drain_finishes_what_fits_the_grace_hands_back_the_rest_and_stays_up(
    stand: Stand, site: str, nats_url: str, tmp_path: Path
) -> None:
    settings = registering_worker(
        nats_url,
        tmp_path,
        worker_slots=2,
        # the quick task needs well under a second alone; the margin is for a machine busy with other tests
        # (at 3 s it was handed back too, now and then, under load)
        shutdown_grace_seconds=6,
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run(settings, stop))
    try:
        quick, slow = await start_two(stand, site)
        reply = await stand.nc.request(subjects.worker_drain(stand.worker_id), b"", timeout=60)
        assert DrainReply.model_validate_json(reply.data) == DrainReply(
            worker_id=stand.worker_id, finished=1, handed_back=1
        )
        assert not worker.done()  # drained, not stopped

        later = unique_name("later")
        await stand.dispatch(later, steps(site, hang=False))
        # the quick task reported; the slow one was handed back at once (delivered again), the new one waits
        assert stand.results[quick].is_set()
        assert [u.status for u in stand.updates[quick] if u.kind == "result"] == ["completed"]
        assert not stand.results[slow].is_set()
        assert await stand.waiting() == {slow: 2, later: 1}
        assert later not in stand.claims

        again = await stand.nc.request(subjects.worker_drain(stand.worker_id), b"", timeout=10)
        assert DrainReply.model_validate_json(again.data).handed_back == 1  # idempotent answer
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)


async def test_sigterm_finishes_within_grace_and_hands_back_the_rest(
    stand: Stand, site: str, nats_url: str, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NATS_URL", "DATABASE_URL", "WORKER_"))},
        "NATS_URL": nats_url,
        "WORKER_INVITE_CODE": "inv",
        "WORKER_STATE_DIR": str(tmp_path),
        "WORKER_SLOTS": "2",
        "SHUTDOWN_GRACE_SECONDS": "6",  # margin for a busy machine, as in the drain test
        "BROWSER_ALLOW_NETWORKS": "127.0.0.1/32",
        "HEARTBEAT_SECONDS": "0.5",
    }
    async with service_process("browserfleet_worker", env) as proc:
        quick, slow = await start_two(stand, site)
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    assert [u.status for u in stand.updates[quick] if u.kind == "result"] == ["completed"], text
    assert not stand.results[slow].is_set()
    assert "handing 1 task(s) back for redelivery" in text
    assert await stand.waiting() == {slow: 2}


async def test_log_lines_reach_the_scheduler_while_the_task_runs(
    stand: Stand, site: str, nats_url: str, tmp_path: Path
) -> None:
    """A followable log needs lines before the result: they ship every LOG_SHIP_SECONDS, numbered, and the
    result repeats them with the same numbers (so the scheduler stores each line once)."""
    settings = registering_worker(nats_url, tmp_path, log_ship_seconds=0.2)
    stop = asyncio.Event()
    worker = asyncio.create_task(run(settings, stop))
    try:
        task_id = unique_name("logs")
        await stand.dispatch(
            task_id,
            [
                {"action": "navigate", "url": f"{site}/login"},
                {"action": "wait_for", "delay_ms": 2500},
                {"action": "wait_for", "selector": "#username"},
            ],
        )
        await asyncio.wait_for(stand.results[task_id].wait(), 60)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
    updates = stand.updates[task_id]
    kinds = [u.kind for u in updates]
    assert "log" in kinds
    assert kinds.index("log") < kinds.index("result")  # shipped while running, not only with the result
    live = [line for u in updates if u.kind == "log" for line in u.logs]
    assert live[0].seq == 0
    assert "navigate" in live[0].message
    final = next(u for u in updates if u.kind == "result").logs
    assert [line.seq for line in final] == list(range(len(final)))
    assert {(line.seq, line.message) for line in live} <= {(line.seq, line.message) for line in final}
