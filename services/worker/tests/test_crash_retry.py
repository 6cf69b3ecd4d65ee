"""A browser crash under a running task: the attempt's result says `retryable`, a step failure does not, and
the worker goes on with the next task by itself. Real NATS, real Chromium (killed with SIGKILL); the scheduler
and worker-gateway are stood in by small in-test responders on their request/reply subjects."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import nats
from browserfleet_contracts import endpoints
from browserfleet_contracts.tasks import ClaimRequest, TaskUpdateMessage
from browserfleet_core.streams import ensure_pool_consumers, ensure_streams
from browserfleet_devkit.testing import unique_name
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.netguard import parse_networks
from browserfleet_worker.presence import Identity
from browserfleet_worker.settings import WorkerSettings
from browserfleet_worker.worker import Worker
from nats.aio.msg import Msg

from .conftest import dispatch as publish_dispatch
from .conftest import kill_browser


async def test_a_killed_browser_fails_the_attempt_as_retryable_and_the_next_task_runs(
    nats_url: str, site: str
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    pool, worker_id = unique_name("pool"), unique_name("w")
    await ensure_pool_consumers(js, pool)
    started: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
    results: dict[str, asyncio.Future[TaskUpdateMessage]] = defaultdict(
        lambda: asyncio.get_running_loop().create_future()
    )

    async def claim(msg: Msg) -> None:
        await msg.respond(json.dumps({"granted": True, "worker_id": worker_id}).encode())
        started[ClaimRequest.model_validate_json(msg.data).task_id].set()  # granted: the task is running

    async def heartbeat(msg: Msg) -> None:
        await msg.respond(b'{"ok": true}')

    async def on_update(msg: Msg) -> None:
        update = TaskUpdateMessage.model_validate_json(msg.data)
        if update.kind == "result" and not results[update.task_id].done():
            results[update.task_id].set_result(update)

    subs = [
        await nc.subscribe(endpoints.Scheduler.CLAIM.subject, cb=claim),
        await nc.subscribe(endpoints.Workers.HEARTBEAT.subject, cb=heartbeat),
        await nc.subscribe("tasks.updates.>", cb=on_update),
    ]

    async def dispatch(task_id: str, steps: list[dict[str, Any]]) -> None:
        await publish_dispatch(js, pool, task_id, steps, timeout_seconds=120)

    settings = WorkerSettings(
        nats_url=nats_url,
        worker_key="sk_worker_crash",
        worker_slots=1,
        heartbeat_seconds=0.5,
        trace_on_failure=False,
        browser_allow_networks=["127.0.0.1/32"],
    )
    host = BrowserHost(allowed_networks=parse_networks(["127.0.0.1/32"]))  # its own: this test kills it
    await host.start()
    worker = Worker(settings, nc, host, Identity("sk_worker_crash", worker_id, pool))
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop))
    try:
        # 1. a step failure is the task's own: not retryable
        bad = unique_name("bad")
        await dispatch(
            bad,
            [
                {"action": "navigate", "url": f"{site}/login"},
                {"action": "click", "selector": "#absent", "timeout_ms": 300},
            ],
        )
        failed = await asyncio.wait_for(results[bad], 60)
        assert failed.status == "failed" and failed.error_message is not None
        assert "#absent" in failed.error_message
        assert failed.retryable is False

        # 2. the browser dies under a running task: failed, retryable, naming the cause
        hanging = unique_name("hang")
        await dispatch(
            hanging,
            [
                {"action": "navigate", "url": f"{site}/login"},
                {"action": "wait_for", "selector": "#never", "timeout_ms": 60_000},
            ],
        )
        await asyncio.wait_for(started[hanging].wait(), 60)
        # its context is open (a browser killed before that is simply launched again for it)
        await asyncio.wait_for(_until(lambda: host.active == 1), 60)
        await asyncio.sleep(1.0)  # let it reach the wait; the kill is the fault being injected
        kill_browser(host)
        crashed = await asyncio.wait_for(results[hanging], 60)
        assert crashed.status == "failed"
        assert crashed.retryable is True, crashed.error_message
        assert crashed.error_message is not None
        assert crashed.error_message.startswith("the browser crashed or disconnected (retryable)")

        # 3. the worker relaunches the browser by itself and runs the next task
        after = unique_name("after")
        await dispatch(
            after,
            [{"action": "navigate", "url": f"{site}/login"}, {"action": "extract", "selector": "#go"}],
        )
        ok = await asyncio.wait_for(results[after], 60)
        assert ok.status == "completed", ok.error_message
        assert ok.retryable is False
        assert ok.result is not None and ok.result["extracted"] == {"extracted": "Sign in"}
        assert host.launches == 2
    finally:
        stop.set()
        await asyncio.wait_for(loop, 30)
        await host.close()
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await nc.close()


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - BrowserHost counts its open contexts, it has no event
        await asyncio.sleep(0.05)
