"""The live view through the whole platform, started as `make dev` starts it (devstack) on its own NATS and
PostgreSQL: a real worker runs a task in real Chromium against a page on 127.0.0.1 that keeps repainting
for a few seconds, and a viewer watches it over the gateway's WebSocket as the dashboard does.

A privileged client on the bus sees that nothing is published for the task until someone watches, that
frames flow while they do, and that they stop when the task ends; another organization's admin is refused
as if the task did not exist.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from browserfleet_contracts.eventstream import CloseCode
from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.sites import OnePageSite
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ..platforms import own_platform

pytestmark = pytest.mark.e2e

WAIT_CAP = 90.0  # hang protection only; nothing asserts on speed
HOLD_MS = 6000  # how long the task keeps its page open: long enough to watch, short enough for the suite
QUIET_SECONDS = 1.5  # how long the bus is watched for silence while the task runs and nobody watches
# a customer's website: one page whose counter repaints every animation frame
COUNTER = (
    b"<!doctype html><html><head><title>Counting</title></head><body><h1 id=n>0</h1><script>let i=0;"
    b"(function f(){document.getElementById('n').textContent=++i;requestAnimationFrame(f)})()</script>"
    b"</body></html>"
)


class Running:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.http = httpx.Client(base_url=platform.gateway_url, timeout=30)
        boot = platform.bootstrap
        assert boot is not None and boot.password
        self.a = self.login(boot.admin_email, boot.password)
        # another organization, by the platform operator (org A's admin), with its own admin
        r = self.http.post(
            "/organizations",
            headers=self.a,
            json={"name": "Org B", "slug": "org-b", "admin_email": "admin@org-b.example"},
        )
        assert r.status_code == 201, r.text
        self.b = self.login(r.json()["admin_email"], r.json()["admin_password"])

    def login(self, email: str, password: str) -> dict[str, str]:
        r = self.http.post("/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def task(self, task_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/tasks/{task_id}", headers=self.a)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(self, task_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_CAP
        task = self.task(task_id)
        while task["status"] not in statuses:
            assert time.monotonic() < deadline, task
            time.sleep(0.1)
            task = self.task(task_id)
        return task

    async def bus(self) -> NatsClient:
        """The privileged test client: the authenticated bus's `admin`, which may subscribe to anything."""
        return await self.platform.connect_admin("live-view-test")

    async def socket(self, task_id: str, headers: dict[str, str]) -> websockets.ClientConnection:
        url = self.platform.gateway_url.replace("http://", "ws://", 1) + f"/api/v1/tasks/{task_id}/live"
        return await websockets.connect(url, additional_headers=headers, max_size=None)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    # its own authenticated NATS, as `make dev` runs it: the live view's subjects under real permissions
    with own_platform("bf_live", tmp_path_factory.mktemp("home")) as platform:
        yield Running(platform)


async def closed(ws: websockets.ClientConnection) -> tuple[int | None, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    try:
        while True:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT_CAP)))
    except websockets.ConnectionClosed:
        pass
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code if rcvd else None), seen


def test_frames_flow_only_while_watched_and_stop_when_the_task_ends(running: Running) -> None:
    with OnePageSite(COUNTER, "text/html; charset=utf-8") as site:
        asyncio.run(_watch(running, site.url))


async def _watch(running: Running, site: str) -> None:
    bus = await running.bus()
    heard: list[tuple[str, float]] = []

    async def on_live(msg: Msg) -> None:
        op = msg.subject.rsplit(".", 1)[1]
        if op == "frames":  # a frame, or the worker's word that the run ended
            op = str(json.loads(msg.data).get("kind"))
        heard.append((op, time.monotonic()))

    await bus.subscribe("tasks.live.>", cb=on_live)  # everything of every live view, as a bus spy
    await bus.flush()
    try:
        body = {"steps": [{"action": "navigate", "url": site}, {"action": "wait_for", "delay_ms": HOLD_MS}]}
        r = running.http.post("/api/v1/tasks", headers=running.a, json=body)
        assert r.status_code == 201, r.text
        task_id = r.json()["id"]
        await asyncio.to_thread(running.wait, task_id, ("running",))

        # another organization's admin: as if the task did not exist
        other = await running.socket(task_id, running.b)
        code, seen = await closed(other)
        assert code == CloseCode.NOT_FOUND
        assert [m["type"] for m in seen] == ["AUTHENTICATED", "ERROR"] and seen[1]["code"] == "task_not_found"

        # the page repaints all the time, yet nobody watches: nothing on the bus
        await asyncio.sleep(QUIET_SECONDS)
        await bus.flush()
        assert running.task(task_id)["status"] == "running", "the task ended before anyone watched"
        assert heard == [], f"published while nobody watched: {heard[:3]}"

        viewer = await running.socket(task_id, running.a)
        first = json.loads(await asyncio.wait_for(viewer.recv(), WAIT_CAP))
        assert first["type"] == "AUTHENTICATED"
        started = json.loads(await asyncio.wait_for(viewer.recv(), WAIT_CAP))
        assert started["type"] == "LIVE_STARTED" and started["task_id"] == task_id
        code, seen = await closed(viewer)  # frames until the task ends
        ended_at = time.monotonic()
        frames = [m for m in seen if m["type"] == "FRAME"]
        assert frames, "no frame arrived while the task ran"
        for frame in frames:
            assert frame["task_id"] == task_id and frame["format"] == "jpeg"
            assert base64.b64decode(frame["data"])[:3] == b"\xff\xd8\xff"  # a JPEG
        assert [f["seq"] for f in frames] == sorted({f["seq"] for f in frames})
        assert code == CloseCode.NORMAL
        assert seen[-1] == {
            "type": "LIVE_ENDED",
            "task_id": task_id,
            "reason": "task finished",
            "status": None,
        }
        done = await asyncio.to_thread(running.wait, task_id, ("completed", "failed"))
        assert done["status"] == "completed", done

        # the frames went over the bus while someone watched, and stopped with the task
        await asyncio.sleep(QUIET_SECONDS)
        await bus.flush()
        published = [at for op, at in heard if op == "frame"]
        assert len(published) >= len(frames)  # a viewer may miss frames, never get more than were sent
        assert not [at for at in published if at > ended_at], "frames after the task ended"
    finally:
        await bus.close()


def test_a_handoff_waits_until_the_watching_admin_continues(running: Running) -> None:
    with OnePageSite(COUNTER, "text/html; charset=utf-8") as site:
        asyncio.run(_hand_off(running, site.url))


async def _hand_off(running: Running, site: str) -> None:
    steps = [
        {"action": "navigate", "url": site},
        {"action": "handoff", "message": "check the counter, then continue"},
        {"action": "extract", "name": "title", "selector": "title"},
    ]
    r = running.http.post("/api/v1/tasks", headers=running.a, json={"steps": steps})
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]
    await asyncio.to_thread(running.wait, task_id, ("running",))
    viewer = await running.socket(task_id, running.a)
    waiting: str | None = None
    while waiting is None:  # LIVE_STARTED says so when the run already waits, else HANDOFF comes
        msg = json.loads(await asyncio.wait_for(viewer.recv(), WAIT_CAP))
        if msg["type"] in ("LIVE_STARTED", "HANDOFF"):
            waiting = msg.get("handoff") or (msg.get("message") if msg.get("waiting") else None)
    assert waiting == "check the counter, then continue"
    assert running.task(task_id)["status"] == "running"  # it waits for us
    await viewer.send(json.dumps({"type": "INPUT", "kind": "continue"}))
    code, seen = await closed(viewer)
    assert code == CloseCode.NORMAL and seen[-1]["type"] == "LIVE_ENDED"
    assert {"type": "HANDOFF", "task_id": task_id, "waiting": False, "message": ""} in seen
    done = await asyncio.to_thread(running.wait, task_id, ("completed", "failed"))
    assert done["status"] == "completed", done
    assert done["result"]["extracted"] == {"title": "Counting"}
