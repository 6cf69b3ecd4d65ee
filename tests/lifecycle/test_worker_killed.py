"""Fault test: a worker process killed with SIGKILL mid-task. The whole platform runs as `make dev` runs it
(browserfleet_devkit.devstack.Platform, two workers, real NATS, real PostgreSQL, real Chromium); the task must
complete exactly once, on the other worker, as attempt 2."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.task_admin import GetTaskAttemptsRequest, TaskAttemptPublic
from browserfleet_contracts.tasks import CreateTaskRequest, GetTaskRequest, TaskCreate, TaskPublic
from browserfleet_core.messaging import RpcClient
from browserfleet_core.streams import ensure_pool_consumers
from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.sites import QuietHandler
from browserfleet_devkit.testing import LoopbackHTTPServer
from nats.aio.client import Client as NatsClient

from .conftest import eventually

WAIT_CAP = 120.0  # hang protection only; nothing here asserts on speed
LEASE_SECONDS = 3.0  # the TASKS consumers' ack_wait for this run: a dead worker's lease ends quickly


class SlowSite(LoopbackHTTPServer):
    """Stands in for a customer's website on 127.0.0.1: `/slow` answers only once `release` is set, so
    the task is certainly mid-run when the worker is killed."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hits = 0
        site = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                site.hits += 1
                site.release.wait(WAIT_CAP)
                body = b"<!doctype html><title>slow page</title><h1 id='h'>finally</h1>"
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the killed worker's
                    self.answer(200, body, "text/html")

        super().__init__(Handler)


@pytest.fixture
def site() -> Iterator[SlowSite]:
    with SlowSite() as server:
        yield server
        server.release.set()


async def _short_leases(nc: NatsClient) -> None:
    # created before the services: ensure_pool_consumers keeps an existing consumer's config
    await ensure_pool_consumers(nc.jetstream(), ack_wait=LEASE_SECONDS)


async def test_worker_killed_mid_task_completes_once_on_the_other(
    database_url: str, tmp_path: Path, site: SlowSite
) -> None:
    lines: list[str] = []
    platform = Platform(  # its own authenticated NATS, as `make dev` runs it
        tmp_path / "home",
        database_url=database_url,
        prepare=_short_leases,
        workers=2,
        env={
            "LEASE_EXTEND_SECONDS": "1",
            "RETRY_BACKOFF_SECONDS": "0.5",
            "ADMISSION_POLL_SECONDS": "0.2",
            "BROWSER_ALLOW_NETWORKS": "127.0.0.1/32",
            "WORKER_SLOTS": "1",
        },
        output=lines.append,
    )
    await asyncio.to_thread(platform.start)
    nc = await platform.connect_admin("lifecycle-client")
    try:
        rpc = RpcClient(nc, timeout=15)
        # a real organization: workers read its policy from auth before they run its task
        assert platform.bootstrap is not None
        who = Actor(org_id=platform.bootstrap.org_id, user_id="u1", role="admin")
        body = TaskCreate.model_validate(
            {
                "title": "survives a kill -9",
                "max_attempts": 3,
                "steps": [
                    {"action": "navigate", "url": f"{site.url}/slow", "timeout_ms": 100_000},
                    {"action": "extract", "name": "heading", "selector": "#h"},
                ],
            }
        )
        task: TaskPublic = await rpc.call(
            endpoints.Scheduler.CREATE_TASK, CreateTaskRequest(actor=who, task=body)
        )

        async def get() -> TaskPublic:
            return await rpc.call(endpoints.Scheduler.GET_TASK, GetTaskRequest(actor=who, task_id=task.id))

        async def running_on() -> str | None:
            if site.hits < 1:
                return None
            for line in list(lines):
                if f"running {task.id}#1" in line:
                    return line.split("|", 1)[0].strip()
            return None

        label = await eventually(running_on, "attempt 1 to be mid-navigation on a worker", WAIT_CAP)
        victim = next(sp for sp in platform.processes if sp.name == label)
        victim.proc.kill()  # SIGKILL: no shutdown path, no nak, the lease just stops being extended
        await asyncio.to_thread(victim.proc.wait)
        site.release.set()

        async def finished() -> TaskPublic | None:
            current = await get()
            return current if current.status in ("completed", "failed", "timed_out", "cancelled") else None

        done = await eventually(finished, "the task to finish on the surviving worker", WAIT_CAP)
        assert done.status == "completed", (done.status, done.error_message, done.status_detail)
        assert done.attempt == 2 and "finally" in json.dumps(done.result), done.result
        attempts: list[TaskAttemptPublic] = await rpc.call(
            endpoints.Scheduler.TASK_ATTEMPTS, GetTaskAttemptsRequest(actor=who, task_id=task.id)
        )
        assert [(a.attempt, a.status) for a in attempts] == [(1, "lost"), (2, "completed")]
        assert attempts[0].worker_id != attempts[1].worker_id
        assert attempts[0].error and "lease" in attempts[0].error

        js = nc.jetstream()
        completed = subjects.event(who.org_id, "task.completed")

        async def events(subject: str) -> int:
            info = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subject)
            return int((info.state.subjects or {}).get(subject, 0))

        await eventually(lambda: events(completed), "task.completed event", WAIT_CAP)
        assert await events(completed) == 1, "completed exactly once"
        assert await events(subjects.event(who.org_id, "task.started")) == 2  # one per attempt
        assert await events(subjects.event(who.org_id, "task.failed")) == 0
    finally:
        await nc.close()
        await asyncio.to_thread(platform.stop)
