"""A worker cannot report for an attempt it does not hold (issue 11, item 2): the server refuses an update on
another worker's subject, and the scheduler records nothing from an update sent on the sender's own subject
that names someone else, or that speaks about an attempt held by another worker. The task is unchanged
until its real holder reports, and the refusals are counted."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import (
    ClaimRequest,
    CreateTaskRequest,
    GetTaskRequest,
    TaskCreate,
    TaskPublic,
)
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.testing import wait_consumed
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from .conftest import EDGE_TAG, Bus, Registered, result_of

pytestmark = pytest.mark.e2e

UPDATES_DURABLE = "scheduler"  # the scheduler's TASK_UPDATES consumer


def refused_updates(bus_: Bus) -> dict[str, float]:
    """browserfleet_scheduler_refused_updates_total by reason, from the scheduler's /metrics."""
    port = next(sp.metrics_port for sp in bus_.platform.processes if sp.name == "scheduler")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = re.findall(r'browserfleet_scheduler_refused_updates_total\{reason="(\w+)"\} ([0-9.e+]+)', text)
    return {reason: float(value) for reason, value in found}


async def task_now(rpc: RpcClient, actor: Actor, task_id: str) -> TaskPublic:
    task: TaskPublic = await rpc.call(
        endpoints.Scheduler.GET_TASK, GetTaskRequest(actor=actor, task_id=task_id)
    )
    return task


async def until(rpc: RpcClient, actor: Actor, task_id: str, status: str, cap: float = 90.0) -> TaskPublic:
    deadline = time.monotonic() + cap  # hang protection only
    while True:
        task = await task_now(rpc, actor, task_id)
        if task.status == status:
            return task
        assert time.monotonic() < deadline, f"task stayed {task.status} ({task.status_detail})"
        await asyncio.sleep(0.2)


async def test_a_forged_update_is_refused_by_the_server_and_ignored_by_the_scheduler(
    bus_platform: Bus, admin: NatsClient, org_worker: Registered, platform_worker: Registered
) -> None:
    rpc = RpcClient(admin, timeout=15)
    actor = Actor(org_id=bus_platform.org_id, user_id="bus-test", role="admin")
    created: TaskPublic = await rpc.call(
        endpoints.Scheduler.CREATE_TASK,
        CreateTaskRequest(
            actor=actor,
            task=TaskCreate.model_validate(
                {
                    "steps": [{"action": "navigate", "url": "https://example.invalid/"}],
                    "worker_tags": [EDGE_TAG],
                }
            ),
        ),
    )
    await until(rpc, actor, created.id, "assigned")
    holder, intruder = org_worker, platform_worker

    # the holder claims the attempt, over its own bus identity
    nc_holder = await bus_platform.as_worker(holder.key)
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc_intruder = await bus_platform.as_worker(intruder.key, error_cb=on_error)
    try:
        claim = await RpcClient(nc_holder).call(
            endpoints.Scheduler.CLAIM, ClaimRequest(task_id=created.id, attempt=1, worker_key=holder.key)
        )
        assert claim.granted, claim.reason
        before = refused_updates(bus_platform)
        js_intruder = nc_intruder.jetstream()
        forged = result_of(created.id, holder.worker_id, "failed", error_message="forged")

        # 1. on the holder's subject: the server refuses it, nothing is stored
        await nc_intruder.publish(
            subjects.task_update(holder.worker_id, created.id), forged.model_dump_json().encode()
        )
        await nc_intruder.flush()
        deadline = time.monotonic() + 10
        while not any("publish" in e and holder.worker_id in e for e in errors):
            assert time.monotonic() < deadline, f"no refusal from the server: {errors}"
            await asyncio.sleep(0.05)
        with pytest.raises(NotFoundError):
            await admin.jetstream().get_last_msg(
                subjects.TASK_UPDATES_STREAM, subjects.task_update(holder.worker_id, created.id)
            )

        # 2. on its own subject, naming the holder; 3. on its own subject, as itself, about the holder's
        # attempt: stored (the server lets a worker speak under its own id), and recorded as nothing
        await js_intruder.publish(
            subjects.task_update(intruder.worker_id, created.id), forged.model_dump_json().encode()
        )
        as_itself = forged.model_copy(update={"worker_id": intruder.worker_id})
        ack = await js_intruder.publish(
            subjects.task_update(intruder.worker_id, created.id), as_itself.model_dump_json().encode()
        )
        await wait_consumed(admin.jetstream(), subjects.TASK_UPDATES_STREAM, UPDATES_DURABLE, ack.seq)
        task = await task_now(rpc, actor, created.id)
        assert (task.status, task.error_message, task.worker_id) == ("running", None, holder.worker_id)
        after = refused_updates(bus_platform)
        assert after.get("subject", 0) - before.get("subject", 0) == 1
        assert after.get("claimant", 0) - before.get("claimant", 0) == 1

        # the holder's own result is what counts
        real = result_of(created.id, holder.worker_id, "completed", result={"ok": True})
        await nc_holder.jetstream().publish(
            subjects.task_update(holder.worker_id, created.id), real.model_dump_json().encode()
        )
        done = await until(rpc, actor, created.id, "completed")
        assert done.result == {"ok": True} and done.error_message is None
    finally:
        await nc_holder.close()
        await nc_intruder.close()
