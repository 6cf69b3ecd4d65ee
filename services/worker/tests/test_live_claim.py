"""The live view of a task is there the moment its claim makes the task `running`, on a real NATS server and the
worker's real Chromium (the whole worker, with stand-ins for worker-gateway and the scheduler).

The claim is what shows the task as running, and a viewer may ask for it before the claim's reply reaches the
worker: the stand-in scheduler asks for the live view (as a gateway would) before it answers each claim. A
worker that knows its id listens before it claims, and answers once the claim is granted; for a claim it did
not get, it answers nothing and says nothing on the frames subject."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

import nats
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.live import (
    LiveEnded,
    LiveFrame,
    LiveHandoff,
    LiveMessage,
    LiveStartReply,
    LiveStartRequest,
)
from browserfleet_contracts.tasks import ClaimRequest, TaskDispatch, TaskSpec, TaskUpdateMessage
from browserfleet_contracts.workers import RegisterReply
from browserfleet_core.streams import ensure_pool_consumers, ensure_streams
from browserfleet_devkit.testing import unique_name
from browserfleet_worker.app import run
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import TypeAdapter

from .conftest import registering_worker

WORKER = "w-live-claim"
WAIT_CAP = 30.0  # hang protection only
MESSAGES: TypeAdapter[LiveFrame | LiveEnded | LiveHandoff] = TypeAdapter(LiveMessage)


async def test_a_viewer_who_asks_while_the_claim_is_answered_finds_the_live_view(
    nats_url: str, site: str, tmp_path: Path
) -> None:
    pool = unique_name("pool")
    shown, refused = unique_name("task"), unique_name("task")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await ensure_pool_consumers(js, pool)
    starts: dict[str, Subscription] = {}  # task -> the inbox its live view's start was asked on
    live: dict[str, list[LiveFrame | LiveEnded | LiveHandoff]] = defaultdict(
        list
    )  # task -> what its frames subject carried
    results: asyncio.Future[TaskUpdateMessage] = asyncio.get_running_loop().create_future()

    async def register(msg: Msg) -> None:
        reply = RegisterReply(
            worker_id=WORKER,
            worker_key="sk_worker_live",
            api_key="sk_worker_live",
            pool=pool,
            pool_name=pool,
            org_id=None,
            tags=[],
        )
        await msg.respond(reply.model_dump_json().encode())

    async def heartbeat(msg: Msg) -> None:
        await msg.respond(b'{"ok": true}')

    async def claim(msg: Msg) -> None:
        req = ClaimRequest.model_validate_json(msg.data)
        # a viewer asks the moment the task shows as running: before the claim's reply reaches the worker
        inbox = nc.new_inbox()
        starts[req.task_id] = await nc.subscribe(inbox)
        ask = LiveStartRequest(task_id=req.task_id, attempt=req.attempt, watcher="gw-1")
        await nc.publish(
            subjects.live_start(req.task_id, WORKER), ask.model_dump_json().encode(), reply=inbox
        )
        await (
            nc.flush()
        )  # the server routed the start (to the worker, or nowhere) before the claim is answered
        granted = req.task_id == shown
        body = {"granted": granted, "reason": None if granted else "task was cancelled", "worker_id": WORKER}
        await msg.respond(json.dumps(body).encode())

    async def on_update(msg: Msg) -> None:
        update = TaskUpdateMessage.model_validate_json(msg.data)
        if update.kind == "result" and not results.done():
            results.set_result(update)

    subs = [
        await nc.subscribe(endpoints.Workers.REGISTER.subject, cb=register),
        await nc.subscribe(endpoints.Workers.HEARTBEAT.subject, cb=heartbeat),
        await nc.subscribe(endpoints.Scheduler.CLAIM.subject, cb=claim),
        await nc.subscribe(subjects.task_update(WORKER, shown), cb=on_update),
    ]
    for task_id in (shown, refused):

        async def on_live(msg: Msg, task_id: str = task_id) -> None:
            live[task_id].append(MESSAGES.validate_json(msg.data))

        subs.append(await nc.subscribe(subjects.live_frames(task_id, WORKER), cb=on_live))

    # the refused one first (urgent), then one that waits until it is cancelled
    for task_id, priority, steps in (
        (refused, "urgent", [{"action": "navigate", "url": f"{site}/login"}]),
        (
            shown,
            "normal",
            [
                {"action": "navigate", "url": f"{site}/login"},
                {"action": "wait_for", "selector": "#never", "timeout_ms": 120_000},
            ],
        ),
    ):
        d = TaskDispatch(
            task_id=task_id,
            org_id="org-1",
            attempt=1,
            priority=priority,
            timeout_seconds=180,
            spec=TaskSpec.model_validate({"steps": steps}),
        )
        await js.publish(
            subjects.task_run(pool, priority), d.model_dump_json().encode(), headers={"Nats-Msg-Id": task_id}
        )

    settings = registering_worker(nats_url, tmp_path / "state", "inv-live", worker_slots=1)
    stop = asyncio.Event()
    worker = asyncio.create_task(run(settings, stop))
    try:
        deadline = time.monotonic() + WAIT_CAP
        while shown not in starts:
            assert time.monotonic() < deadline and not worker.done(), "the task was never claimed"
            await asyncio.sleep(0.05)
        answer = await starts[shown].next_msg(timeout=WAIT_CAP)
        assert answer.data, f"nobody answered the start: {answer.headers}"  # a no-responders status is empty
        reply = LiveStartReply.model_validate_json(answer.data)
        assert reply.accepted, reply.reason
        # the watcher the view took before its claim was granted gets the task's page once it opens
        while not any(isinstance(m, LiveFrame) for m in live[shown]):
            assert time.monotonic() < deadline + WAIT_CAP and not worker.done(), "no frame arrived"
            await asyncio.sleep(0.05)
        await nc.publish(subjects.task_cancel(shown), b"")
        result = await asyncio.wait_for(results, WAIT_CAP)
    finally:
        stop.set()
        await asyncio.wait_for(worker, WAIT_CAP)
    assert (result.status, result.error_message) == ("failed", "cancelled while running")

    # the worker has stopped: whatever it published is here after one round trip
    await nc.flush()
    await asyncio.sleep(0.2)  # for the frames subscriptions' callbacks to take what the flush brought
    assert isinstance(live[shown][-1], LiveEnded), live[shown][-1]
    # the refused claim's view heard the start but answered nothing, and never said anything about the task
    assert refused in starts, "the refused task was claimed"
    assert starts[refused].pending_msgs == 0, "the view of a claim the worker did not get answered a viewer"
    assert live[refused] == []

    for sub in [*subs, *starts.values()]:
        await sub.unsubscribe()
    await nc.close()
