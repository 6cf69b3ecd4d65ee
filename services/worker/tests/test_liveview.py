"""The worker's side of the live view, on real NATS and the session's real Chromium: nothing is cast while
nobody watches; a watcher's start brings JPEG frames bounded in rate and size; stop, a watcher that goes
quiet and the end of the run each stop them; a start for another attempt, or on a worker whose operator
turned live view off, is refused."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats
import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.live import (
    LiveEnded,
    LiveFrame,
    LiveHandoff,
    LiveInput,
    LiveMessage,
    LiveStartReply,
    LiveStartRequest,
    LiveStop,
)
from browserfleet_contracts.tasks import TaskSpec
from browserfleet_worker.browser import BrowserHost
from browserfleet_worker.liveview import OFF, WITHHELD, LiveView, refusal
from browserfleet_worker.settings import WorkerSettings
from browserfleet_worker.steps import StepsRunner
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from playwright.async_api import BrowserContext
from pydantic import TypeAdapter

WORKER = "w-live-1"
MAX_FPS = 4.0
MAX_WIDTH = 320
# repaints every animation frame (~60 per second), far more than the live view may send
ANIMATED = (
    "<body style='margin:0;background:#fff'><h1 id=n>0</h1><script>let i=0;"
    "(function f(){document.getElementById('n').textContent=++i;requestAnimationFrame(f)})()</script></body>"
)
WAIT_CAP = 20.0  # hang protection only
MESSAGES: TypeAdapter[LiveFrame | LiveEnded | LiveHandoff] = TypeAdapter(LiveMessage)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame marker."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xC3:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    raise AssertionError("no start-of-frame marker")


@dataclass
class Watch:
    """A privileged test client on the frames subject, as a gateway would be."""

    nc: NatsClient
    task_id: str
    frames: list[tuple[float, LiveFrame]] = field(default_factory=list)
    ended: list[LiveEnded] = field(default_factory=list)
    handoffs: list[LiveHandoff] = field(default_factory=list)

    async def on_message(self, msg: Msg) -> None:
        message = MESSAGES.validate_json(msg.data)
        if isinstance(message, LiveFrame):
            self.frames.append((time.monotonic(), message))
        elif isinstance(message, LiveHandoff):
            self.handoffs.append(message)
        else:
            self.ended.append(message)

    async def start(self, watcher: str = "gw-1", attempt: int = 1) -> LiveStartReply:
        req = LiveStartRequest(task_id=self.task_id, attempt=attempt, watcher=watcher)
        msg = await self.nc.request(
            subjects.live_start(self.task_id, WORKER), req.model_dump_json().encode(), timeout=WAIT_CAP
        )
        return LiveStartReply.model_validate_json(msg.data)

    async def stop(self, watcher: str = "gw-1") -> None:
        await self.nc.publish(
            subjects.live_stop(self.task_id, WORKER), LiveStop(watcher=watcher).model_dump_json().encode()
        )
        await self.nc.flush()

    async def until(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_CAP
        while len(self.frames) < count:
            assert time.monotonic() < deadline, f"only {len(self.frames)} of {count} frames arrived"
            await asyncio.sleep(0.05)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    conn = await nats.connect(nats_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def ctx(browser: BrowserHost) -> AsyncIterator[BrowserContext]:
    async with browser.context() as context:
        page = await context.new_page()
        await page.set_content(ANIMATED)
        yield context


def settings(**overrides: object) -> WorkerSettings:
    return WorkerSettings.model_validate(
        {
            "nats_url": "nats://unused.invalid:4222",
            "live_view_max_fps": MAX_FPS,
            "live_view_max_width": MAX_WIDTH,
            **overrides,
        }
    )


@contextlib.asynccontextmanager
async def live_view(
    nc: NatsClient, ctx: BrowserContext, task_id: str, **overrides: object
) -> AsyncIterator[tuple[LiveView, Watch]]:
    watch = Watch(nc, task_id)
    sub = await nc.subscribe(subjects.live_frames(task_id, WORKER), cb=watch.on_message)
    refuse = overrides.pop("refuse", None)
    view = LiveView(
        nc, settings(**overrides), task_id, 1, WORKER, refuse=refuse if isinstance(refuse, str) else None
    )
    await view.open()
    view.attach(ctx)
    try:
        yield view, watch
    finally:
        await view.close()
        await nc.flush()
        await asyncio.sleep(0.2)  # let the subscription's callback take what the flush brought
        await sub.unsubscribe()


async def test_frames_only_while_watched_bounded_in_rate_and_size(
    nc: NatsClient, ctx: BrowserContext
) -> None:
    async with live_view(nc, ctx, "task-live-1") as (view, watch):
        await asyncio.sleep(1.0)  # the page repaints all the time; nobody watches
        await nc.flush()
        assert watch.frames == [] and not view.casting

        asked = time.monotonic()
        reply = await watch.start()
        assert reply.accepted and reply.max_fps == MAX_FPS
        assert (reply.width, reply.height) == (1280, 720)  # Playwright's default viewport
        assert view.casting
        await watch.until(6)
        count, window = len(watch.frames), time.monotonic() - asked

        # a rate bound, not a speed claim: nothing is published before the start, and a slow machine only
        # delays receipt (which widens the window), so at most MAX_FPS a second (plus the first frame)
        assert count <= window * MAX_FPS + 1, (count, window)
        for _, frame in watch.frames:
            assert frame.task_id == "task-live-1" and frame.attempt == 1 and frame.format == "jpeg"
            width, height = jpeg_size(base64.b64decode(frame.data))
            assert width <= MAX_WIDTH and height <= 960
            assert (frame.width, frame.height) == (1280, 720)
        assert [f.seq for _, f in watch.frames] == list(range(len(watch.frames)))

        await watch.stop()
        deadline = time.monotonic() + WAIT_CAP
        while view.casting:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        await nc.flush()
        stopped_at = len(watch.frames)
        await asyncio.sleep(1.0)
        await nc.flush()
        assert len(watch.frames) == stopped_at, "frames went on after the last watcher stopped"
    # the run ended while nobody watched any more, but somebody had: they hear it ended
    await nc.flush()
    assert [e.reason for e in watch.ended] == ["task finished"]


async def test_two_watchers_share_one_screencast_until_both_leave(
    nc: NatsClient, ctx: BrowserContext
) -> None:
    async with live_view(nc, ctx, "task-live-2") as (view, watch):
        assert (await watch.start("gw-a")).accepted
        assert (await watch.start("gw-b")).accepted
        await watch.until(2)
        await watch.stop("gw-a")
        count = len(watch.frames)
        await watch.until(count + 2)  # gw-b still watches
        assert view.casting
        await watch.stop("gw-b")
        deadline = time.monotonic() + WAIT_CAP
        while view.casting:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)


async def test_a_watcher_that_goes_quiet_is_forgotten(nc: NatsClient, ctx: BrowserContext) -> None:
    async with live_view(nc, ctx, "task-live-3") as (view, watch):
        view.idle_seconds = 0.5  # its gateway died: no stop, no renewal
        assert (await watch.start()).accepted
        await watch.until(1)
        deadline = time.monotonic() + WAIT_CAP
        while view.casting:
            assert time.monotonic() < deadline, "the screencast outlived its watcher's renewals"
            await asyncio.sleep(0.05)


async def test_the_end_of_the_run_stops_the_screencast_and_says_so(
    nc: NatsClient, ctx: BrowserContext
) -> None:
    async with live_view(nc, ctx, "task-live-4") as (view, watch):
        assert (await watch.start()).accepted
        await watch.until(1)
    assert not view.casting
    await nc.flush()
    assert [(e.task_id, e.attempt) for e in watch.ended] == [("task-live-4", 1)]
    # after the end the subject has no responder: a gateway's renewal learns the run is over
    req = LiveStartRequest(task_id="task-live-4", attempt=1, watcher="gw-1")
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request(
            subjects.live_start("task-live-4", WORKER), req.model_dump_json().encode(), timeout=5
        )


async def test_the_end_is_said_before_the_run_stops_answering(
    nc: NatsClient, ctx: BrowserContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal that finds no responder cannot tell a finished run from a crashed worker: a run that ends says
    so (LiveEnded) before its subscriptions go, so the gateway hears the end first."""
    said: list[str] = []
    publish, unsubscribe = nc.publish, Subscription.unsubscribe

    async def publishing(subject: str, payload: bytes = b"", *args: object, **kwargs: object) -> None:
        if subject == subjects.live_frames("task-live-9", WORKER) and b'"kind":"ended"' in payload:
            said.append("ended")
        await publish(subject, payload, *args, **kwargs)  # type: ignore[arg-type]

    async def unsubscribing(sub: Subscription, limit: int = 0) -> None:
        kind = sub.subject.rsplit(".", 1)[-1]
        if sub.subject.startswith("tasks.live.task-live-9.") and kind in ("start", "stop", "input"):
            said.append(f"unsubscribed {kind}")
        await unsubscribe(sub, limit)

    monkeypatch.setattr(nc, "publish", publishing)
    monkeypatch.setattr(Subscription, "unsubscribe", unsubscribing)
    async with live_view(nc, ctx, "task-live-9") as (_view, watch):
        assert (await watch.start()).accepted
        await watch.until(1)
    assert said[0] == "ended", said
    assert sorted(said[1:]) == ["unsubscribed input", "unsubscribed start", "unsubscribed stop"]


async def test_refusals(nc: NatsClient, ctx: BrowserContext) -> None:
    async with live_view(nc, ctx, "task-live-5") as (view, watch):
        reply = await watch.start(attempt=2)
        assert not reply.accepted and reply.reason and "attempt 2" in reply.reason
        bad = await nc.request(subjects.live_start("task-live-5", WORKER), b"{not json", timeout=WAIT_CAP)
        assert not LiveStartReply.model_validate_json(bad.data).accepted
        assert not view.casting
    for task_id, options, reason in (
        ("task-live-6", {"live_view_enabled": False}, OFF),
        ("task-live-7", {"refuse": WITHHELD}, WITHHELD),  # what a task typing vault secrets gets
    ):
        async with live_view(nc, ctx, task_id, **options) as (view, watch):
            reply = await watch.start()
            assert not reply.accepted and reply.reason == reason
            await asyncio.sleep(0.5)
            await nc.flush()
            assert watch.frames == [] and not view.casting
        assert watch.ended == []  # nobody was ever shown anything


def test_which_tasks_are_withheld() -> None:
    def spec(**body: object) -> TaskSpec:
        return TaskSpec.model_validate(
            {"kind": "steps", "steps": [{"action": "navigate", "url": "https://a.test"}], **body}
        )

    on, off = settings(), settings(live_view_enabled=False)
    assert refusal(on, spec()) is None
    assert refusal(off, spec()) == OFF
    typed = spec(steps=[{"action": "fill", "selector": "#pw", "value": "{{ secrets.PW }}"}])
    assert refusal(on, typed) == WITHHELD
    # a proxy password never reaches a page
    proxied = spec(
        proxy={"server": "http://proxy.test:3128", "username": "u", "password": "{{ secrets.PROXY }}"}
    )
    assert refusal(on, proxied) is None
    agent = {"kind": "agent", "steps": [], "goal": "find the price", "agent": {"api_key_secret": "LLM_KEY"}}
    assert refusal(on, TaskSpec.model_validate(agent)) is None  # the org's LLM key goes to the model only
    agent["goal"] = "sign in with {{ secrets.PW }}"
    assert refusal(on, TaskSpec.model_validate(agent)) == WITHHELD


# --- takeover -----------------------------------------------------------------------------------------------
FORM = (
    "<body style='margin:0'><button id=b style='position:absolute;left:100px;top:100px;width:120px;height:40px'"
    ' onclick="this.textContent=Number(this.textContent||0)+1"></button>'
    "<input id=t style='position:absolute;left:100px;top:200px;width:200px'></body>"
)


async def send_input(nc: NatsClient, task_id: str, watcher: str, event: dict[str, object]) -> None:
    body = {"task_id": task_id, "attempt": 1, "watcher": watcher, "event": {"type": "INPUT", **event}}
    await nc.publish(
        subjects.live_input(task_id, WORKER), LiveInput.model_validate(body).model_dump_json().encode()
    )


async def click(nc: NatsClient, task_id: str, watcher: str, x: float, y: float) -> None:
    for event in ("mousePressed", "mouseReleased"):
        mouse: dict[str, object] = {
            "kind": "mouse",
            "event": event,
            "x": x,
            "y": y,
            "button": "left",
            "click_count": 1,
        }
        await send_input(nc, task_id, watcher, mouse)


async def type_text(nc: NatsClient, task_id: str, watcher: str, text: str) -> None:
    for ch in text:
        await send_input(nc, task_id, watcher, {"kind": "key", "event": "keyDown", "key": ch, "text": ch})
        await send_input(nc, task_id, watcher, {"kind": "key", "event": "keyUp", "key": ch})


async def test_a_watcher_drives_the_page_with_mouse_and_keyboard(
    nc: NatsClient, browser: BrowserHost
) -> None:
    async with browser.context() as context:
        page = await context.new_page()
        await page.set_content(FORM)
        async with live_view(nc, context, "task-live-8") as (_view, watch):
            # not watching (yet): input goes nowhere
            await click(nc, "task-live-8", "gw-1", 160, 120)
            await nc.flush()
            assert (await watch.start("gw-1")).accepted
            # a watcher's clicks and keys land on the page, in order
            await click(nc, "task-live-8", "gw-1", 160, 120)
            await click(nc, "task-live-8", "gw-1", 160, 120)
            await click(nc, "task-live-8", "gw-1", 150, 210)  # focus the text field
            await type_text(nc, "task-live-8", "gw-1", "hi!")
            # another gateway that does not watch cannot; the watcher's last key shows everything before it
            # was handled (one subscription, in order)
            await click(nc, "task-live-8", "gw-2", 160, 120)
            await type_text(nc, "task-live-8", "gw-1", "?")
            check = "document.querySelector('#t').value === 'hi!?'"
            await page.wait_for_function(check, timeout=WAIT_CAP * 1000)
            assert await page.text_content("#b") == "2"


async def test_takeover_can_be_turned_off(nc: NatsClient, browser: BrowserHost) -> None:
    async with browser.context() as context:
        page = await context.new_page()
        await page.set_content(FORM)
        async with live_view(nc, context, "task-live-9", live_view_input_enabled=False) as (_view, watch):
            assert (await watch.start("gw-1")).accepted  # still watchable
            await click(nc, "task-live-9", "gw-1", 160, 120)
            await nc.flush()
            await asyncio.sleep(0.5)
            assert await page.text_content("#b") == ""


# --- handoff ------------------------------------------------------------------------------------------------
def handoff_spec(timeout_ms: int | None = None) -> TaskSpec:
    step: dict[str, object] = {"action": "handoff", "message": "solve the puzzle, then continue"}
    if timeout_ms is not None:
        step["timeout_ms"] = timeout_ms
    return TaskSpec.model_validate({"kind": "steps", "steps": [step, {"action": "wait_for", "delay_ms": 1}]})


async def test_a_handoff_waits_for_a_watcher_to_continue(nc: NatsClient, browser: BrowserHost) -> None:
    async with browser.context() as context, live_view(nc, context, "task-live-10") as (view, watch):
        runner = StepsRunner(handoff_spec(), trace_on_failure=False)
        runner.handoff = view.handoff
        assert (await watch.start("gw-1")).accepted
        run = asyncio.create_task(runner.run(context))
        deadline = time.monotonic() + WAIT_CAP
        while not watch.handoffs:
            assert time.monotonic() < deadline and not run.done(), "the handoff was never announced"
            await asyncio.sleep(0.05)
        assert watch.handoffs[0].waiting and watch.handoffs[0].message == "solve the puzzle, then continue"
        # a gateway that joins now learns it from the start reply
        assert (await watch.start("gw-2")).handoff == "solve the puzzle, then continue"
        # a continue from a gateway that does not watch is ignored; a watcher's ends the wait
        await send_input(nc, "task-live-10", "gw-3", {"kind": "continue"})
        await nc.flush()
        await asyncio.sleep(0.3)
        assert not run.done()
        await send_input(nc, "task-live-10", "gw-1", {"kind": "continue"})
        outcome = await asyncio.wait_for(run, WAIT_CAP)
        assert outcome.status == "completed", outcome.error_message
        messages = [line.message for line in outcome.logs]
        assert any("waiting up to 300 s for a person to continue" in m for m in messages), messages
        assert any("a person pressed continue" in m for m in messages)
        await nc.flush()
        assert [h.waiting for h in watch.handoffs] == [True, False]


async def test_a_handoff_nobody_continues_fails_its_step(nc: NatsClient, browser: BrowserHost) -> None:
    async with browser.context() as context, live_view(nc, context, "task-live-11") as (view, _watch):
        runner = StepsRunner(handoff_spec(timeout_ms=300), trace_on_failure=False)
        runner.handoff = view.handoff
        outcome = await runner.run(context)
        assert outcome.status == "failed" and outcome.error_step == 0
        assert outcome.error_message == "step 0 (handoff): nobody pressed continue within 0.3 s"
    # a worker whose live view (or its input) is off has nobody to hand off to: it says so at once
    async with browser.context() as context:
        outcome = await StepsRunner(handoff_spec(), trace_on_failure=False).run(context)
        assert outcome.status == "failed"
        assert outcome.error_message and "live view or its input is turned off" in outcome.error_message
