"""The live view at the gateway's edge (`/api/v1/tasks/{task_id}/live`): uvicorn on 127.0.0.1, real NATS; auth and
the scheduler stood in by the conftest's responders (real Ed25519 tokens), and the worker running the task by
`StandInWorker`, which answers the live-view subjects as the worker does (the worker's own side runs real
Chromium in services/worker/tests/test_liveview.py; the whole path, tests/live).

Sharing, renewal and stop, the end of the run, who may watch (another organization's task is not found),
bad input, a slow viewer, expiry."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.auth import UserChanged, UserState
from browserfleet_contracts.common import Actor
from browserfleet_contracts.eventstream import CloseCode
from browserfleet_contracts.tasks import CreateTaskRequest, TaskCreate, TaskStatus
from browserfleet_gateway.liveview import START_RETRY_SECONDS

from .conftest import Signer, task_public
from .livestand import WORKER, StandInWorker
from .wsfixtures import WAIT_CAP, Served, closed_with, recv, recv_type, served

ORG_A, ORG_B = "org-a", "org-b"
KEEPALIVE = 0.2  # the renewal interval in these tests (3 s in production)


@pytest.fixture(scope="module")
async def gw(nats_url: str) -> AsyncIterator[Served]:
    async with served(nats_url, Signer(), ws_auth_timeout_seconds=1.0, live_view_queue_frames=3) as s:
        s.app.state.gateway.live.keepalive_seconds = KEEPALIVE
        yield s


def add_task(
    gw: Served, org: str = ORG_A, status: TaskStatus = "running", worker_id: str | None = WORKER
) -> str:
    req = CreateTaskRequest(
        actor=Actor(org_id=org, user_id="u", role="user"),
        task=TaskCreate.model_validate({"steps": [{"action": "navigate", "url": "https://example.test/"}]}),
    )
    task = task_public(req, status=status, worker_id=worker_id)
    gw.services.tasks[task.id] = task
    return str(task.id)


@pytest.fixture
async def worker(gw: Served) -> AsyncIterator[StandInWorker]:
    w = StandInWorker(gw.nc, add_task(gw))
    await w.start()
    yield w
    await w.gone()


async def watch(gw: Served, task_id: str, token: str | None = None, **kw: Any) -> Any:
    ws = await gw.connect(token or gw.token(org=ORG_A), path=f"/api/v1/tasks/{task_id}/live", **kw)
    await recv_type(ws, "AUTHENTICATED")
    return ws


async def frames(ws: Any, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        msg = await recv(ws)
        if msg["type"] == "FRAME":
            out.append(msg)
    return out


async def until(check: Any) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_CAP
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


# --- watching -------------------------------------------------------------------------------------------
async def test_viewers_of_one_task_share_one_screencast_until_the_run_ends(
    gw: Served, worker: StandInWorker
) -> None:
    first = await watch(gw, worker.task_id)
    started = await recv_type(first, "LIVE_STARTED")
    assert started == {
        "type": "LIVE_STARTED",
        "task_id": worker.task_id,
        "attempt": 1,
        "width": 1280,
        "height": 720,
        "max_fps": 5.0,
        "handoff": None,
    }
    seq = await worker.frame()
    frame = (await frames(first, 1))[0]
    assert frame["seq"] == seq and frame["format"] == "jpeg" and frame["task_id"] == worker.task_id
    assert base64.b64decode(frame["data"])[:4] == seq.to_bytes(4, "big")

    # a second viewer joins the same feed: it sees the last frame at once, then the same frames
    second = await watch(gw, worker.task_id)
    await recv_type(second, "LIVE_STARTED")
    assert (await frames(second, 1))[0]["seq"] == seq
    for _ in range(3):
        await worker.frame()
    assert [f["seq"] for f in await frames(first, 3)] == [f["seq"] for f in await frames(second, 3)]
    # one watcher (this gateway's feed) renews for both viewers
    await until(lambda: len(worker.starts) >= 3)
    assert len(worker.watchers()) == 1

    await worker.ended()  # the worker's word that the run is over
    for ws in (first, second):
        code, _reason, seen = await closed_with(ws)
        assert code == CloseCode.NORMAL
        assert seen[-1] == {
            "type": "LIVE_ENDED",
            "task_id": worker.task_id,
            "reason": "task finished",
            "status": None,
        }


async def test_the_last_viewer_leaving_stops_the_screencast(gw: Served, worker: StandInWorker) -> None:
    a = await watch(gw, worker.task_id)
    b = await watch(gw, worker.task_id)
    await recv_type(b, "LIVE_STARTED")
    await a.close()
    await asyncio.sleep(KEEPALIVE * 3)
    assert worker.stops == []  # b still watches
    await b.close()
    await until(lambda: len(worker.stops) == 1)
    assert worker.stops[0].watcher in worker.watchers()
    renewals = len(worker.starts)
    await asyncio.sleep(KEEPALIVE * 5)
    assert len(worker.starts) == renewals, "the gateway kept renewing for nobody"
    # the next viewer gets a feed of its own, with a new watcher id (a late stop cannot end it)
    c = await watch(gw, worker.task_id)
    await recv_type(c, "LIVE_STARTED")
    assert len(worker.watchers()) == 2
    await c.close()


async def test_a_viewer_who_leaves_while_the_worker_is_asked_stops_it(
    gw: Served, worker: StandInWorker
) -> None:
    worker.delay = 1.0
    ws = await watch(gw, worker.task_id)
    await ws.close()  # before the worker answered
    await until(lambda: len(worker.stops) == 1)
    renewals = len(worker.starts)
    await asyncio.sleep(KEEPALIVE * 5 + worker.delay)
    assert len(worker.starts) == renewals, "the gateway kept renewing for nobody"
    assert len(gw.app.state.gateway.live.sockets) == 0


async def test_a_worker_that_goes_away_ends_the_view(gw: Served, worker: StandInWorker) -> None:
    ws = await watch(gw, worker.task_id)
    await recv_type(ws, "LIVE_STARTED")
    await worker.gone()  # no LIVE_ENDED from it: the renewal finds no responder
    code, _reason, seen = await closed_with(ws)
    # the scheduler still has the task running that attempt: its worker is gone (crashed, cut off), the run
    # is not over
    assert code == CloseCode.NORMAL
    assert seen[-1] == {
        "type": "LIVE_ENDED",
        "task_id": worker.task_id,
        "reason": "worker unavailable",
        "status": "running",
    }


async def test_a_run_that_ended_without_a_word_is_finished(gw: Served, worker: StandInWorker) -> None:
    ws = await watch(gw, worker.task_id)
    await recv_type(ws, "LIVE_STARTED")
    task = gw.services.tasks[worker.task_id]
    gw.services.tasks[worker.task_id] = task.model_copy(update={"status": "completed"})
    await worker.gone()  # its LiveEnded lost: the renewal finds no responder, the scheduler says completed
    code, _reason, seen = await closed_with(ws)
    assert code == CloseCode.NORMAL
    assert seen[-1] == {
        "type": "LIVE_ENDED",
        "task_id": worker.task_id,
        "reason": "task finished",
        "status": "completed",
    }


async def test_a_worker_that_subscribes_after_the_first_start_is_asked_again(gw: Served) -> None:
    """The claim shows the task running just before its worker subscribes: a viewer may ask first."""
    late = StandInWorker(gw.nc, add_task(gw))
    ws = await watch(gw, late.task_id)
    hub = gw.app.state.gateway.live
    await until(lambda: any(key[0] == late.task_id for key in hub._feeds))
    await asyncio.sleep(3 * START_RETRY_SECONDS)  # the first start found no responder by now
    await late.start()
    try:
        started = await recv_type(ws, "LIVE_STARTED")
        assert started["task_id"] == late.task_id
    finally:
        await ws.close()
        await late.gone()


async def test_a_worker_that_never_answers_a_start_is_unavailable(gw: Served) -> None:
    task_id = add_task(gw)  # running on WORKER, which never subscribed
    ws = await watch(gw, task_id)
    code, _reason, seen = await closed_with(ws)
    assert code == CloseCode.NORMAL
    assert seen[-1] == {
        "type": "LIVE_ENDED",
        "task_id": task_id,
        "reason": "worker unavailable",
        "status": "running",
    }


async def test_a_refusal_is_the_end_with_its_reason(gw: Served, worker: StandInWorker) -> None:
    worker.accept, worker.reason = False, "this task types vault secrets, so it is not shown live"
    ws = await watch(gw, worker.task_id)
    code, _reason, seen = await closed_with(ws)
    assert code == CloseCode.NORMAL
    assert seen == [
        {"type": "LIVE_ENDED", "task_id": worker.task_id, "reason": worker.reason, "status": "running"}
    ]


@pytest.mark.parametrize("status", ["queued", "assigned", "completed", "failed", "cancelled"])
async def test_a_task_not_running_ends_at_once(gw: Served, status: TaskStatus) -> None:
    task_id = add_task(gw, status=status, worker_id=WORKER if status != "queued" else None)
    ws = await watch(gw, task_id)
    code, _reason, seen = await closed_with(ws)
    assert code == CloseCode.NORMAL
    assert seen == [{"type": "LIVE_ENDED", "task_id": task_id, "reason": "not running", "status": status}]


# --- who may watch ------------------------------------------------------------------------------------
async def test_another_organizations_task_is_not_found(gw: Served, worker: StandInWorker) -> None:
    for token in (gw.token(org=ORG_B, role="admin"), gw.api_key(ORG_B, ["tasks:read"])[0]):
        ws = await watch(gw, worker.task_id, token)
        code, reason, seen = await closed_with(ws)
        assert (code, reason) == (CloseCode.NOT_FOUND, "task not found")
        assert seen == [
            {"type": "ERROR", "code": "task_not_found", "message": "task not found", "field": "task_id"}
        ]
    # unknown ids and ids no task can have look the same, and never reach NATS as a subject
    for task_id in (uuid.uuid4().hex, "a.b", "*", ">", "x" * 65):
        ws = await watch(gw, task_id)
        assert (await closed_with(ws))[0] == CloseCode.NOT_FOUND
    assert worker.starts == []  # its worker was never asked


async def test_credentials(gw: Served, worker: StandInWorker) -> None:
    path = f"/api/v1/tasks/{worker.task_id}/live"
    # nothing sent: 4408 after the auth timeout; a bad token: 4401; a key without tasks:read: 4403
    assert (await closed_with(await gw.connect(path=path)))[0] == CloseCode.TIMEOUT
    assert (await closed_with(await gw.connect("not-a-token", path=path)))[0] == CloseCode.UNAUTHORIZED
    narrow = gw.api_key(ORG_A, ["credentials:write"])[0]
    assert (await closed_with(await gw.connect(narrow, path=path)))[0] == CloseCode.FORBIDDEN
    # a viewer may watch (it may read the task); so may a tasks:read key
    for token in (gw.token(role="viewer"), gw.api_key(ORG_A, ["tasks:read"])[0]):
        ws = await watch(gw, worker.task_id, token)
        await recv_type(ws, "LIVE_STARTED")
        await ws.close()
    # a browser: the token as the first message, or a single-use ticket
    ws = await gw.connect(path=path)
    await ws.send(json.dumps({"type": "AUTH", "token": gw.token()}))
    await recv_type(ws, "LIVE_STARTED")
    await ws.close()
    async with httpx.AsyncClient(base_url=gw.http) as http:
        r = await http.post("/api/v1/events/ticket", headers={"Authorization": f"Bearer {gw.token()}"})
        assert r.status_code == 201, r.text
    ws = await gw.connect(path=f"{path}?ticket={r.json()['ticket']}")
    await recv_type(ws, "LIVE_STARTED")
    await ws.close()
    ws = await gw.connect(path=f"{path}?ticket={r.json()['ticket']}")  # used up
    assert (await closed_with(ws))[0] == CloseCode.UNAUTHORIZED


async def test_a_token_that_expires_ends_the_view(gw: Served, worker: StandInWorker) -> None:
    ws = await watch(gw, worker.task_id, gw.signer.token(org=ORG_A, ttl=2))
    await recv_type(ws, "LIVE_STARTED")
    code, _reason, seen = await closed_with(ws)
    assert code == CloseCode.UNAUTHORIZED
    assert seen[-1]["type"] == "ERROR" and seen[-1]["code"] == "token_expired"


async def test_an_api_key_revoked_while_watching_ends_the_view(gw: Served, worker: StandInWorker) -> None:
    raw, key_id = gw.api_key(ORG_A, ["tasks:read"])
    ws = await watch(gw, worker.task_id, raw)
    await recv_type(ws, "LIVE_STARTED")
    await gw.nc.publish(subjects.API_KEY_REVOKED, json.dumps({"key_id": key_id, "org_id": ORG_A}).encode())
    assert (await closed_with(ws))[:2] == (CloseCode.UNAUTHORIZED, "API key revoked")


# --- bad input and slow viewers ---------------------------------------------------------------------
async def test_malformed_messages_get_an_error_and_the_view_goes_on(
    gw: Served, worker: StandInWorker
) -> None:
    ws = await watch(gw, worker.task_id)
    await recv_type(ws, "LIVE_STARTED")
    for sent, code in (
        ("{not json", "invalid_json"),
        (json.dumps({"type": "TAKEOVER"}), "unknown_type"),
        (json.dumps([1, 2]), "invalid_message"),
        (json.dumps({"type": "AUTH"}), "invalid_message"),
        (b"\x00\x01", "invalid_message"),
    ):
        await ws.send(sent)
        assert (await recv_type(ws, "ERROR"))["code"] == code
    await ws.send(json.dumps({"type": "PING"}))
    await recv_type(ws, "PONG")
    seq = await worker.frame()
    assert (await frames(ws, 1))[0]["seq"] == seq  # still watching
    await ws.send("x" * (gw.settings.ws_max_message_bytes + 1))
    assert (await closed_with(ws))[0] == CloseCode.MESSAGE_TOO_BIG


async def test_a_flood_is_closed(gw: Served, worker: StandInWorker) -> None:
    ws = await watch(gw, worker.task_id)
    for _ in range(200):
        await ws.send(json.dumps({"type": "PING"}))
    code, _reason, seen = await closed_with(ws)
    assert code == CloseCode.TOO_MANY_MESSAGES
    assert any(m.get("code") == "rate_limited" for m in seen)


async def test_a_slow_viewer_loses_old_frames_and_holds_nobody_back(
    gw: Served, worker: StandInWorker
) -> None:
    slow = await watch(gw, worker.task_id, max_queue=1)  # reads nothing from here on (nor buffers much)
    fast = await watch(gw, worker.task_id)
    await recv_type(fast, "LIVE_STARTED")
    hub = gw.app.state.gateway.live
    await until(lambda: len(hub.sockets) == 2)
    last = 0
    for _ in range(40):  # ~27 MB of frames: far more than the slow one's socket buffers hold
        last = await worker.frame(size=512 * 1024)
        got = await frames(fast, 1)  # the fast one takes each as it comes
        assert got[0]["seq"] == last
    viewers = [s.viewer for s in hub.sockets]
    assert max(v.dropped for v in viewers) > 0, "the slow viewer was buffered, not dropped"
    assert all(len(v._frames) <= gw.settings.live_view_queue_frames for v in viewers)
    await slow.close()
    await fast.close()


# --- takeover -------------------------------------------------------------------------------------------
CLICK = {"type": "INPUT", "kind": "mouse", "event": "mousePressed", "x": 10.5, "y": 20, "button": "left"}
KEY = {"type": "INPUT", "kind": "key", "event": "keyDown", "key": "a", "code": "KeyA", "text": "a"}


async def test_who_may_change_the_task_may_drive_it(gw: Served, worker: StandInWorker) -> None:
    for token in (gw.token(role="user"), gw.api_key(ORG_A, ["tasks:read", "tasks:write"])[0]):
        ws = await watch(gw, worker.task_id, token)
        await recv_type(ws, "LIVE_STARTED")
        before = len(worker.inputs)
        await ws.send(json.dumps(CLICK))
        await ws.send(json.dumps(KEY))
        await until(lambda: len(worker.inputs) == before + 2)  # noqa: B023 - awaited within the iteration
        sent = worker.inputs[before:]
        assert [i.event.model_dump(exclude_defaults=True) for i in sent] == [
            {
                "type": "INPUT",
                "kind": "mouse",
                "event": "mousePressed",
                "x": 10.5,
                "y": 20.0,
                "button": "left",
            },
            {"type": "INPUT", "kind": "key", "event": "keyDown", "key": "a", "code": "KeyA", "text": "a"},
        ]
        # as the feed's watcher, which the worker knows from the renewals
        assert {i.watcher for i in sent} <= worker.watchers() and {i.attempt for i in sent} == {1}
        await ws.close()


async def test_who_may_only_read_the_task_may_not(gw: Served, worker: StandInWorker) -> None:
    for token in (gw.token(role="viewer"), gw.api_key(ORG_A, ["tasks:read"])[0]):
        ws = await watch(gw, worker.task_id, token)
        await recv_type(ws, "LIVE_STARTED")
        await ws.send(json.dumps(CLICK))
        error = await recv_type(ws, "ERROR")
        assert error["code"] == "forbidden" and "tasks:write" in error["message"]
        await ws.send(json.dumps({"type": "PING"}))
        await recv_type(ws, "PONG")  # everything before it was handled
        await ws.close()
    assert worker.inputs == []


async def test_malformed_input_is_named_and_never_reaches_the_worker(
    gw: Served, worker: StandInWorker
) -> None:
    ws = await watch(gw, worker.task_id, gw.token(role="admin"))
    await recv_type(ws, "LIVE_STARTED")
    for bad, where in (
        ({**CLICK, "x": -5}, "x"),
        ({**CLICK, "event": "teleport"}, "event"),
        ({**CLICK, "kind": "pen"}, "kind"),
        ({**KEY, "text": "x" * 50}, "text"),
        ({**CLICK, "script": "alert(1)"}, "script"),
    ):
        await ws.send(json.dumps(bad))
        error = await recv_type(ws, "ERROR")
        assert (error["code"], error["field"]) == ("invalid_message", where), error
    await ws.send(json.dumps({"type": "PING"}))
    await recv_type(ws, "PONG")
    assert worker.inputs == []
    await ws.close()


async def test_a_handoff_is_shown_and_a_user_continues_it(gw: Served, worker: StandInWorker) -> None:
    worker.handoff = "solve the captcha"  # the run already waits when the first viewer comes
    first = await watch(gw, worker.task_id, gw.token(role="user"))
    assert (await recv_type(first, "LIVE_STARTED"))["handoff"] == "solve the captcha"
    await worker.handing_off(False)  # someone else continued; then the next step hands off again
    assert await recv_type(first, "HANDOFF") == {
        "type": "HANDOFF",
        "task_id": worker.task_id,
        "waiting": False,
        "message": "",
    }
    await worker.handing_off(True, "check the total, then continue")
    assert (await recv_type(first, "HANDOFF"))["message"] == "check the total, then continue"
    # a viewer joining now is told at once, and may not continue; the user may
    viewer = await watch(gw, worker.task_id, gw.token(role="viewer"))
    assert (await recv_type(viewer, "LIVE_STARTED"))["handoff"] == "check the total, then continue"
    await viewer.send(json.dumps({"type": "INPUT", "kind": "continue"}))
    assert (await recv_type(viewer, "ERROR"))["code"] == "forbidden"
    await first.send(json.dumps({"type": "INPUT", "kind": "continue"}))
    await until(lambda: len(worker.inputs) == 1)
    assert worker.inputs[0].event.model_dump() == {"type": "INPUT", "kind": "continue"}
    for ws in (first, viewer):
        await ws.close()


async def test_a_user_deactivated_or_demoted_while_watching(gw: Served, worker: StandInWorker) -> None:
    def changed(user: str, *, active: bool = True, role: str = "user") -> bytes:
        state = UserState(user_id=user, org_id=ORG_A, active=active, role=role)
        return UserChanged(org_id=ORG_A, state=state).model_dump_json().encode()

    demoted = await watch(gw, worker.task_id, gw.token(sub="user-live-demoted", role="user"))
    gone = await watch(gw, worker.task_id, gw.token(sub="user-live-gone", role="user"))
    colleague = await watch(gw, worker.task_id, gw.token(sub="user-live-colleague", role="user"))
    for ws in (demoted, gone, colleague):
        await recv_type(ws, "LIVE_STARTED")
    await gw.nc.publish(subjects.USER_CHANGED, changed("user-live-demoted", role="viewer"))
    await gw.nc.publish(subjects.USER_CHANGED, changed("user-live-gone", active=False))
    assert (await closed_with(gone))[:2] == (CloseCode.UNAUTHORIZED, "user deactivated")
    # the demotion holds at once: still watching, no longer driving
    sockets = gw.app.state.gateway.live.sockets
    await until(
        lambda: {s.identity.principal.role for s in sockets if s.key_id is None} == {"user", "viewer"}
    )
    await demoted.send(json.dumps(CLICK))
    assert (await recv_type(demoted, "ERROR"))["code"] == "forbidden"
    await colleague.send(json.dumps(CLICK))  # a colleague is untouched
    await until(lambda: len(worker.inputs) == 1)
    for ws in (demoted, colleague):
        await ws.close()
