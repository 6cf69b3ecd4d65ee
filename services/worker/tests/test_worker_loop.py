"""The worker loop on a real NATS server (the `nats_url` fixture of browserfleet_devkit.testing).

The scheduler, vault and worker-gateway are stood in by small in-test responders on their request/reply
subjects, so the worker's side of the task protocol is tested alone: register, heartbeat, pull urgent
first, claim, release secrets, run, store artifacts, result, ack (no `started` update: the claim is the start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections import defaultdict
from pathlib import Path
from typing import Any

import nats
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.tasks import ClaimRequest, TaskDispatch, TaskSpec, TaskUpdateMessage
from browserfleet_contracts.vault import ReleaseRequest
from browserfleet_contracts.workers import Heartbeat, RegisterReply, RegisterRequest
from browserfleet_core.streams import ensure_pool_consumers, ensure_streams
from browserfleet_devkit.testing import unique_name
from browserfleet_worker.app import run
from nats.aio.msg import Msg

from .conftest import registering_worker
from .vault_stand import sealed_release

PNG = b"\x89PNG\r\n\x1a\n"


def dispatch(task_id: str, priority: str, spec: dict[str, Any], timeout: int = 60) -> TaskDispatch:
    return TaskDispatch(
        task_id=task_id,
        org_id="org-1",
        attempt=1,
        priority=priority,
        timeout_seconds=timeout,
        spec=TaskSpec.model_validate(spec),
    )


async def test_worker_runs_a_dispatched_task_end_to_end(
    nats_url: str, site: str, password: str, tmp_path: Path
) -> None:
    pool = unique_name("pool")
    good, refused, agent, doomed = (unique_name("task") for _ in range(4))
    calls: dict[str, list[Any]] = defaultdict(list)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    # worker-gateway makes a pool's consumers when a worker registers in it: a worker may not
    await ensure_pool_consumers(js, pool)

    # --- stand-ins for worker-gateway, scheduler and vault ---
    async def register(msg: Msg) -> None:
        req = RegisterRequest.model_validate_json(msg.data)
        calls["register"].append(req)
        await msg.respond(
            RegisterReply(
                worker_id="w-1",
                worker_key="sk_worker_test",
                api_key="sk_worker_test",
                pool=pool,
                pool_name=pool,
                org_id=None,
                tags=[],
            )
            .model_dump_json()
            .encode()
        )

    async def heartbeat(msg: Msg) -> None:
        calls["heartbeat"].append(Heartbeat.model_validate_json(msg.data))
        await msg.respond(b'{"ok": true}')

    async def claim(msg: Msg) -> None:
        req = ClaimRequest.model_validate_json(msg.data)
        calls["claim"].append(req)
        granted = req.task_id != refused
        reason = None if granted else "task was cancelled"
        await msg.respond(json.dumps({"granted": granted, "reason": reason, "worker_id": "w-1"}).encode())
        if req.task_id == doomed:
            # what the scheduler sends on a cancel the moment the claim made the task running: it may reach
            # the worker before the claim's reply does
            await nc.publish(subjects.task_cancel(doomed), b"")

    async def release(msg: Msg) -> None:
        req = ReleaseRequest.model_validate_json(msg.data)
        calls["release"].append(req)
        await msg.respond(sealed_release(req, {"PASSWORD": password}, "w-1"))

    subs = [
        await nc.subscribe(endpoints.Workers.REGISTER.subject, cb=register),
        await nc.subscribe(endpoints.Workers.HEARTBEAT.subject, cb=heartbeat),
        await nc.subscribe(endpoints.Scheduler.CLAIM.subject, cb=claim),
        await nc.subscribe(endpoints.Vault.RELEASE.subject, cb=release),
    ]
    updates: dict[str, list[TaskUpdateMessage]] = defaultdict(list)
    results: dict[str, asyncio.Future[TaskUpdateMessage]] = {
        t: asyncio.get_running_loop().create_future() for t in (good, agent, doomed)
    }

    async def on_update(msg: Msg) -> None:
        update = TaskUpdateMessage.model_validate_json(msg.data)
        updates[update.task_id].append(update)
        if update.kind == "result" and not results[update.task_id].done():
            results[update.task_id].set_result(update)

    subs.append(await nc.subscribe("tasks.updates.>", cb=on_update))

    # --- the scheduler's side: dispatches on TASKS ---
    steps = {
        "steps": [
            {"action": "navigate", "url": f"{site}/echo?q={{{{ secrets.PASSWORD }}}}"},
            {"action": "extract", "name": "echo", "selector": "#echo"},
            {"action": "screenshot", "name": "page"},
        ]
    }
    for d in (
        dispatch(good, "normal", steps),
        dispatch(refused, "urgent", steps),
        dispatch(agent, "low", {"kind": "agent", "goal": "find the cheapest widget"}),
        dispatch(
            doomed,
            "low",
            {
                "steps": [
                    {"action": "navigate", "url": f"{site}/login"},
                    {"action": "wait_for", "selector": "#never", "timeout_ms": 120_000},
                ]
            },
        ),
    ):
        await js.publish(
            subjects.task_run(pool, d.priority),
            d.model_dump_json().encode(),
            headers={"Nats-Msg-Id": f"{d.task_id}:1"},
        )
    await js.publish(subjects.task_run(pool, "high"), b"{not a dispatch")

    settings = registering_worker(
        nats_url,
        tmp_path / "state",
        "inv-test",
        worker_name="test-worker",
        worker_tags=["t1"],
        lease_extend_seconds=0.5,
        shutdown_grace_seconds=10,
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run(settings, stop))
    try:
        result = await asyncio.wait_for(results[good], 60)
        agent_result = await asyncio.wait_for(results[agent], 60)
        doomed_result = await asyncio.wait_for(results[doomed], 60)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)

    # registration traded the invite for a key, saved privately; the key is what claims carry
    assert [r.invite_code for r in calls["register"]] == ["inv-test"]
    assert calls["register"][0].tags == ["t1"]
    saved = tmp_path / "state" / "worker.json"
    assert json.loads(saved.read_text())["worker_key"] == "sk_worker_test"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert calls["heartbeat"]
    assert calls["heartbeat"][0].worker_key == "sk_worker_test"
    assert calls["heartbeat"][0].slots == 2
    assert {c.task_id for c in calls["claim"]} == {good, refused, agent, doomed}
    assert all(c.worker_key == "sk_worker_test" for c in calls["claim"])
    assert [(r.task_id, r.names) for r in calls["release"]] == [(good, ["PASSWORD"])]

    # a refused claim runs nothing
    assert updates[refused] == []

    assert [u.kind for u in updates[good] if u.kind != "log"] == ["result"]
    assert result.status == "completed", result.error_message
    assert result.worker_id == "w-1"
    assert result.result is not None
    assert result.result["extracted"] == {"echo": "You typed: ***"}
    assert password not in json.dumps(result.model_dump(mode="json"))
    assert [a.name for a in result.artifacts] == ["page.png"]
    ref = result.artifacts[0]
    assert ref.object_name == f"{good}/1/page.png"
    stored = await (await js.object_store(subjects.ARTIFACTS_BUCKET)).get(ref.object_name)
    assert stored.data is not None
    assert stored.data.startswith(PNG)
    assert ref.size == len(stored.data)

    # the result is durable on TASK_UPDATES under its idempotent id
    last = await js.get_last_msg(subjects.TASK_UPDATES_STREAM, subjects.task_update(result.worker_id, good))
    assert last.headers is not None
    assert last.headers["Nats-Msg-Id"] == f"{good}:1:result"

    assert agent_result.status == "failed"
    assert agent_result.error_message is not None
    assert agent_result.error_message.startswith("agent tasks need an LLM endpoint")

    # a cancel signal sent as the claim is granted stops the task at once (its wait_for alone would take 120 s)
    assert (doomed_result.status, doomed_result.error_message) == ("failed", "cancelled while running")

    # every TASKS message was settled (acked, or termed for the refused claim and the malformed one)
    for priority in subjects.PRIORITIES:
        info = await js.consumer_info(subjects.TASKS_STREAM, subjects.task_run_consumer(pool, priority))
        assert (priority, info.num_pending, info.num_ack_pending) == (priority, 0, 0)

    for sub in subs:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    await nc.close()
