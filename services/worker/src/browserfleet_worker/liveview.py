"""The live view of one running attempt (browserfleet_contracts.live): while a gateway watches, Chromium's
screencast of the task's page goes out on core NATS, bounded in rate and size, and is never stored.

A gateway asks on `tasks.live.<task_id>.<worker_id>.start` and renews the request while its viewers stay; the
screencast stops when every watcher said stop, when none renewed for `LIVE_IDLE_SECONDS`, or when the
attempt ends (then watchers are told on the frames subject, so their viewers see the end at once). Nobody
watching, nothing runs: no CDP session, no frame, no publication.

Chromium sends the next frame only after the previous ones are acknowledged, so acknowledging a frame no
sooner than 1/`LIVE_VIEW_MAX_FPS` after the last one bounds the rate at the source (nothing is encoded to be
thrown away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.live import (
    LIVE_IDLE_SECONDS,
    ContinueInput,
    Input,
    LiveEnded,
    LiveFrame,
    LiveHandoff,
    LiveInput,
    LiveStartReply,
    LiveStartRequest,
    LiveStop,
    MouseInput,
)
from browserfleet_contracts.tasks import TaskSpec
from browserfleet_core.background import run_in_background
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from playwright.async_api import BrowserContext, CDPSession, Page
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from .settings import WorkerSettings

log = logging.getLogger(__name__)

FRAMES = Counter("browserfleet_worker_live_frames_total", "Live-view frames published")
DROPPED = Counter(
    "browserfleet_worker_live_frames_dropped_total", "Live-view frames not published (too large, backlog)"
)
CASTING = Gauge("browserfleet_worker_live_screencasts", "Screencasts running now (someone is watching)")

OFF = "live view is turned off on this worker"
# Frames show what is typed, and credentials are write-only: a task that types vault secrets is not shown
# (the org proxy's password never reaches a page and does not count).
WITHHELD = "this task types vault secrets, so it is not shown live"
CALL_SECONDS = 5.0  # a CDP call on a healthy page answers in milliseconds; a hung one must not hold the task


def refusal(settings: WorkerSettings, spec: TaskSpec) -> str | None:
    """Why no viewer may watch a task with this spec on this worker, or None."""
    if not settings.live_view_enabled:
        return OFF
    if spec.page_secret_names():
        return WITHHELD
    return None


class LiveView:
    """One attempt's live view. `open()` before the task shows as running (a viewer may ask at once), `attach`
    the task's browser context when it exists, `close()` when the run is over.

    Opened before its claim (`open(ahead=True)`: the claim's grant shows the task running before its reply
    reaches the worker), it answers nobody until `grant()`: what arrives meanwhile waits in its subscription
    (each delivers in order), and a view closed without a grant (the claim refused or failed) drops it all
    unanswered — it never accepted a watcher, never cast and never says the run ended."""

    def __init__(
        self,
        nc: NatsClient,
        settings: WorkerSettings,
        task_id: str,
        attempt: int,
        worker_id: str,
        *,
        refuse: str | None = None,
    ) -> None:
        self.nc = nc
        # why every start is refused (see `refusal`), or None
        self.refuse = refuse if settings.live_view_enabled else OFF
        self.settings = settings
        self.task_id = task_id
        self.attempt = attempt
        self.worker_id = worker_id
        self.idle_seconds = LIVE_IDLE_SECONDS
        self._watchers: dict[str, float] = {}  # watcher -> monotonic deadline of its last renewal
        self._ctx: BrowserContext | None = None
        self._cast: _Screencast | None = None
        self._lock = asyncio.Lock()
        self._subs: list[Subscription] = []
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._watched = False  # somebody watched at some point: they hear about the end
        self._followed: set[int] = set()  # pages whose closing we listen for
        self._took_over = False
        self._handoff: str | None = None  # the message of the handoff step the run waits in
        self._continued: asyncio.Event | None = None
        # opened ahead of its claim: resolved True by `grant`, False by `close` without one; None: granted
        self._granted: asyncio.Future[bool] | None = None

    @property
    def casting(self) -> bool:
        return self._cast is not None

    @property
    def takes_input(self) -> bool:
        """A person watching may drive the page and continue a handoff."""
        return self.refuse is None and self.settings.live_view_input_enabled

    async def handoff(self, message: str, timeout: float) -> bool:
        """Waits until a watching person presses continue (True) or `timeout` passes (False). Watchers are
        told it waits; one who comes later learns it from the start reply."""
        self._handoff, self._continued = message, asyncio.Event()
        await self._announce(
            LiveHandoff(task_id=self.task_id, attempt=self.attempt, waiting=True, message=message)
        )
        try:
            async with asyncio.timeout(timeout):
                await self._continued.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._handoff, self._continued = None, None
            await self._announce(LiveHandoff(task_id=self.task_id, attempt=self.attempt, waiting=False))

    async def _announce(self, message: LiveHandoff) -> None:
        if self._watchers and not self._closed:
            with contextlib.suppress(Exception):
                await self.nc.publish(
                    subjects.live_frames(self.task_id, self.worker_id), message.model_dump_json().encode()
                )

    async def open(self, *, ahead: bool = False) -> None:
        """Starts answering on the attempt's subjects; `ahead`: before the claim, holding everything until
        `grant()` (the input subject is then listened to whenever the worker's settings allow input: whether
        this task may take it is the grant's word)."""
        if ahead:
            self._granted = asyncio.get_running_loop().create_future()
        start = subjects.live_start(self.task_id, self.worker_id)
        stop = subjects.live_stop(self.task_id, self.worker_id)
        self._subs = [
            await self.nc.subscribe(start, cb=self._on_start),
            await self.nc.subscribe(stop, cb=self._on_stop),
        ]
        if self.takes_input or (
            ahead and self.settings.live_view_enabled and self.settings.live_view_input_enabled
        ):
            inputs = subjects.live_input(self.task_id, self.worker_id)
            self._subs.append(await self.nc.subscribe(inputs, cb=self._on_input))

    def grant(self, refuse: str | None) -> None:
        """The claim was granted: answer what waited and what comes; `refuse` as `refusal` says for the task
        the claim returned."""
        self.refuse = refuse if self.settings.live_view_enabled else OFF
        if self._granted is not None and not self._granted.done():
            self._granted.set_result(True)

    async def _admitted(self) -> bool:
        """Whether a message may be handled: at once once granted; ahead of the claim, when the claim says."""
        gate = self._granted
        return gate is None or await gate

    def attach(self, ctx: BrowserContext) -> None:
        """The context the task's pages live in; the screencast follows its first open page."""
        self._ctx = ctx
        ctx.on("page", lambda _page: run_in_background(self._sync()))
        run_in_background(self._sync())

    async def close(self) -> None:
        """Stops the screencast, says the run ended, then stops answering: in that order, so that a gateway
        hears the end before a renewal can find no responder (which it cannot tell from a crashed worker).
        Without a grant (opened ahead of a claim that was not granted): what waited is dropped unanswered."""
        if self._closed:
            return
        self._closed = True  # from here a start gets no answer and input is ignored
        if self._granted is not None and not self._granted.done():
            self._granted.set_result(False)
        if self._reaper is not None:
            self._reaper.cancel()
        async with self._lock:
            await self._stop_cast()
        self._ctx = None
        if self._watched:
            ended = LiveEnded(task_id=self.task_id, attempt=self.attempt)
            with contextlib.suppress(Exception):
                await self.nc.publish(
                    subjects.live_frames(self.task_id, self.worker_id), ended.model_dump_json().encode()
                )
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # --- watchers --------------------------------------------------------------------------------------
    async def _on_start(self, msg: Msg) -> None:
        if not await self._admitted():
            return
        try:
            req = LiveStartRequest.model_validate_json(msg.data)
        except ValidationError:
            await self._reply(msg, LiveStartReply(accepted=False, reason="malformed start request"))
            return
        if req.task_id != self.task_id or req.attempt != self.attempt:
            # a gateway with stale knowledge of the task: say no rather than show another attempt
            reason = f"attempt {req.attempt} is not running here (this is attempt {self.attempt})"
            await self._reply(msg, LiveStartReply(accepted=False, reason=reason))
            return
        if self.refuse is not None:
            await self._reply(msg, LiveStartReply(accepted=False, reason=self.refuse))
            return
        if self._closed:
            return  # the run is over: silence, and the gateway's renewal finds no responder
        self._watchers[req.watcher] = time.monotonic() + self.idle_seconds
        self._watched = True
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap())
        await self._sync()
        size = self._viewport()
        await self._reply(
            msg,
            LiveStartReply(
                accepted=True,
                width=size[0] if size else None,
                height=size[1] if size else None,
                max_fps=self.settings.live_view_max_fps,
                handoff=self._handoff,
            ),
        )

    async def _on_stop(self, msg: Msg) -> None:
        if not await self._admitted():
            return
        try:
            stop = LiveStop.model_validate_json(msg.data)
        except ValidationError:
            return
        if self._watchers.pop(stop.watcher, None) is not None:
            await self._sync()

    async def _on_input(self, msg: Msg) -> None:
        """A person's input, from a gateway that watches (it checked they may change the task); one
        subscription delivers in order, so a press is never dispatched after its release."""
        if not await self._admitted() or not self.takes_input:
            return
        try:
            req = LiveInput.model_validate_json(msg.data)
        except ValidationError:
            return
        continuing = isinstance(req.event, ContinueInput)
        if req.task_id != self.task_id or req.attempt != self.attempt or req.watcher not in self._watchers:
            # only a current watcher drives the page: a gateway that stopped watching cannot. A continue
            # that goes nowhere is worth a line (a run left waiting); a mouse move is not
            if continuing:
                log.info(
                    "live view of %s: a continue from %s (attempt %d), not a watcher of attempt %d, is ignored",
                    self.task_id,
                    req.watcher,
                    req.attempt,
                    self.attempt,
                )
            return
        if self._closed:
            return
        if continuing:
            if self._continued is not None and not self._continued.is_set():
                log.info("live view of %s: a person pressed continue (watcher %s)", self.task_id, req.watcher)
                self._continued.set()
            else:
                log.info("live view of %s: continue pressed while no handoff waits (ignored)", self.task_id)
            return
        cast = self._cast
        if cast is None:
            return
        if not self._took_over:
            self._took_over = True
            log.info("live view of %s: a person took over the page (watcher %s)", self.task_id, req.watcher)
        try:
            await cast.dispatch(req.event)
        except Exception as exc:  # the page navigated or closed under the input: the next event may land
            log.debug("live view of %s: input not dispatched: %s", self.task_id, exc)

    async def _reap(self) -> None:
        """Forgets watchers that stopped renewing (their gateway died or lost us) and stops when none is left."""
        while self._watchers and not self._closed:
            await asyncio.sleep(min(1.0, self.idle_seconds / 4))
            now = time.monotonic()
            for watcher, deadline in list(self._watchers.items()):
                if deadline < now:
                    log.info("live view of %s: watcher %s went quiet", self.task_id, watcher)
                    self._watchers.pop(watcher, None)
            if not self._watchers:
                await self._sync()

    async def _reply(self, msg: Msg, reply: LiveStartReply) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await self.nc.publish(msg.reply, reply.model_dump_json().encode())

    # --- the screencast -----------------------------------------------------------------------------------
    def _page(self) -> Page | None:
        if self._ctx is None:
            return None
        return next((p for p in self._ctx.pages if not p.is_closed()), None)

    def _viewport(self) -> tuple[int, int] | None:
        page = self._page()
        size = page.viewport_size if page is not None else None
        return (size["width"], size["height"]) if size else None

    async def _sync(self) -> None:
        """Brings the screencast in line with who watches and which page is open."""
        async with self._lock:
            want = bool(self._watchers) and not self._closed
            page = self._page() if want else None
            if self._cast is not None and (page is None or self._cast.page is not page):
                await self._stop_cast()
            if page is not None and self._cast is None:
                cast = _Screencast(self, page)
                try:
                    await cast.start()
                except Exception as exc:  # the page closed under us: the next page event tries again
                    log.info("live view of %s could not start: %s", self.task_id, exc)
                    await cast.stop()
                    return
                self._cast = cast
                CASTING.inc()
                if id(page) not in self._followed:
                    self._followed.add(id(page))
                    page.on("close", lambda _p: run_in_background(self._sync()))

    async def _stop_cast(self) -> None:
        cast, self._cast = self._cast, None
        if cast is not None:
            CASTING.dec()
            await cast.stop()

    async def publish(self, frame: LiveFrame) -> None:
        data = frame.model_dump_json().encode()
        if len(data) > self.nc.max_payload:
            DROPPED.inc()
            return
        await self.nc.publish(subjects.live_frames(self.task_id, self.worker_id), data)
        FRAMES.inc()


class _Screencast:
    """`Page.startScreencast` on one page through its own CDP session, acknowledged at the bounded rate."""

    def __init__(self, view: LiveView, page: Page) -> None:
        self.view = view
        self.page = page
        self.cdp: CDPSession | None = None
        # Chromium keeps at most a couple of frames in flight; anything beyond is acknowledged unseen
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=2)
        self.pump: asyncio.Task[None] | None = None
        self.seq = 0

    async def start(self) -> None:
        settings = self.view.settings
        self.cdp = await asyncio.wait_for(self.page.context.new_cdp_session(self.page), CALL_SECONDS)
        self.cdp.on("Page.screencastFrame", self._on_frame)
        self.pump = asyncio.create_task(self._pump())
        params = {
            "format": "jpeg",
            "quality": settings.live_view_jpeg_quality,
            "maxWidth": settings.live_view_max_width,
            "maxHeight": settings.live_view_max_height,
        }
        await asyncio.wait_for(self.cdp.send("Page.startScreencast", params), CALL_SECONDS)

    def _on_frame(self, params: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(params)
        except asyncio.QueueFull:
            DROPPED.inc()
            run_in_background(self._ack(params))

    async def _pump(self) -> None:
        interval = 1.0 / self.view.settings.live_view_max_fps
        due = 0.0
        while True:
            params = await self.queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            while not self.queue.empty():  # the page changed again meanwhile: show the newest only
                DROPPED.inc()
                run_in_background(self._ack(params))
                params = self.queue.get_nowait()
            due = time.monotonic() + interval
            try:
                await self.view.publish(self._frame(params))
            except Exception as exc:  # NATS reconnecting: this frame is lost, the next one may pass
                DROPPED.inc()
                log.debug("publishing a live frame failed: %s", exc)
            await self._ack(params)

    def _frame(self, params: dict[str, Any]) -> LiveFrame:
        meta = params.get("metadata") or {}
        self.seq += 1
        return LiveFrame(
            task_id=self.view.task_id,
            attempt=self.view.attempt,
            seq=self.seq - 1,
            ts=float(meta.get("timestamp") or time.time()),
            width=int(meta.get("deviceWidth") or 0),
            height=int(meta.get("deviceHeight") or 0),
            data=str(params.get("data") or ""),
        )

    async def dispatch(self, event: Input) -> None:
        """Replays a person's input on the page (CSS pixels of its viewport, as the frames' width/height)."""
        if self.cdp is None or isinstance(event, ContinueInput):
            return
        params: dict[str, Any]
        if isinstance(event, MouseInput):
            params = {
                "type": event.event,
                "x": event.x,
                "y": event.y,
                "button": event.button,
                "clickCount": event.click_count,
                "modifiers": event.modifiers,
            }
            if event.event == "mouseWheel":
                params |= {"deltaX": event.delta_x, "deltaY": event.delta_y}
            await asyncio.wait_for(self.cdp.send("Input.dispatchMouseEvent", params), CALL_SECONDS)
            return
        params = {"type": event.event, "key": event.key, "code": event.code, "modifiers": event.modifiers}
        if event.text:
            params |= {"text": event.text, "unmodifiedText": event.text}
        await asyncio.wait_for(self.cdp.send("Input.dispatchKeyEvent", params), CALL_SECONDS)

    async def _ack(self, params: dict[str, Any]) -> None:
        if self.cdp is None:
            return
        with contextlib.suppress(Exception):
            ack = {"sessionId": params.get("sessionId")}
            await asyncio.wait_for(self.cdp.send("Page.screencastFrameAck", ack), CALL_SECONDS)

    async def stop(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.pump
        cdp, self.cdp = self.cdp, None
        if cdp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cdp.send("Page.stopScreencast"), CALL_SECONDS)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cdp.detach(), CALL_SECONDS)
