"""A worker that NATS refuses because worker-gateway's auth callout does not answer (as right after NATS
restarted, before worker-gateway is back) keeps trying, and once worker-gateway answers it registers,
connects as itself and takes a task; a worker refused for longer than BUS_REFUSED_GRACE_SECONDS (a key or
invite NATS will never accept) stops with the reason and a non-zero exit code, not a clean one.

worker-gateway is made not to answer with SIGSTOP (the callout's requests then time out in NATS, which
refuses the connection as an authorization violation) and resumed with SIGCONT."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import CreateTaskRequest, TaskCreate, TaskPublic
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.devstack import ServiceProcess
from nats.aio.client import Client as NatsClient

from .conftest import Bus
from .test_forged_updates import until

pytestmark = pytest.mark.e2e

CAP = 120.0  # hang protection only: a busy machine starts Chromium and Python slowly


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + CAP
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def process(bus_platform: Bus, name: str) -> ServiceProcess:
    return next(sp for sp in bus_platform.platform.processes if sp.name == name)


def said(bus_platform: Bus, label: str, text: str) -> bool:
    return any(f"{label} |" in line and text in line for line in list(bus_platform.lines))


def log_of(bus_platform: Bus, label: str) -> str:
    return "\n".join(line for line in list(bus_platform.lines) if f"{label} |" in line)[-6000:]


def stop_worker(bus_platform: Bus, sp: ServiceProcess) -> None:
    if sp.proc.poll() is None:
        sp.proc.terminate()
        sp.proc.wait(timeout=60)
    bus_platform.platform.processes.remove(sp)


async def test_a_worker_refused_while_the_callout_is_down_connects_once_it_is_back(
    bus_platform: Bus, admin: NatsClient
) -> None:
    pool = f"refused-{uuid.uuid4().hex[:6]}"
    code = await bus_platform.invite(pool=pool)
    callout = process(bus_platform, "worker-gateway")
    label = f"worker-{pool}"
    os.kill(callout.proc.pid, signal.SIGSTOP)
    bus_platform.platform.env["WORKER_TAGS"] = pool  # a task with this tag goes to this worker's pool alone
    try:
        bus_platform.platform.add_worker(code, pool)
        await eventually(
            lambda: said(bus_platform, label, "the bus refused this"),
            "the worker was never refused while worker-gateway did not answer",
        )
    finally:
        del bus_platform.platform.env["WORKER_TAGS"]
        os.kill(callout.proc.pid, signal.SIGCONT)
    worker = process(bus_platform, label)
    try:
        rpc = RpcClient(admin, timeout=15)
        actor = Actor(org_id=bus_platform.org_id, user_id="bus-test", role="admin")
        page = f"{bus_platform.platform.gateway_url}/health/live"
        created: TaskPublic = await rpc.call(
            endpoints.Scheduler.CREATE_TASK,
            CreateTaskRequest(
                actor=actor,
                task=TaskCreate.model_validate(
                    {"steps": [{"action": "navigate", "url": page}], "worker_tags": [pool]}
                ),
            ),
        )
        try:
            await until(rpc, actor, created.id, "completed", cap=CAP)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the worker's log:\n{log_of(bus_platform, label)}") from None
        assert worker.proc.poll() is None, f"the worker stopped:\n{log_of(bus_platform, label)}"
    finally:
        stop_worker(bus_platform, worker)


async def test_a_worker_refused_past_its_grace_exits_non_zero_with_the_reason(bus_platform: Bus) -> None:
    label = f"worker-bogus-{uuid.uuid4().hex[:6]}"
    bus_platform.platform.env["BUS_REFUSED_GRACE_SECONDS"] = "2"
    try:
        bus_platform.platform.add_worker("inv_no-such-invite", label.removeprefix("worker-"))
    finally:
        del bus_platform.platform.env["BUS_REFUSED_GRACE_SECONDS"]
    worker = process(bus_platform, label)
    try:
        await eventually(lambda: worker.proc.poll() is not None, "the refused worker never stopped")
        assert worker.proc.returncode != 0
        await eventually(
            lambda: said(bus_platform, label, "NATS refused this invite code for"),
            "the worker did not say why it stopped",
        )
    finally:
        stop_worker(bus_platform, worker)
