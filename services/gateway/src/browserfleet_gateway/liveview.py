"""The live view's fan-out in one gateway process (docs/liveview.md; browserfleet_contracts.live).

One `Feed` per watched attempt, shared by every viewer of it on this gateway: the first viewer subscribes to
the worker's frames subject and asks the worker to start; the feed renews that request every
`LIVE_KEEPALIVE_SECONDS` while it has viewers (which is also how it learns the run is over: no responder),
and says stop when its last viewer leaves. Each viewer has a small queue of its own: a viewer that reads
slower than frames come loses its oldest frames, and never holds the gateway's memory or another viewer back.
The last frame is kept in memory (never stored) so that a viewer joining a page that does not change sees it.

A worker that ends a run says so (`LiveEnded`); a start or renewal that finds no responder instead is a feed
ended `unanswered`: the worker crashed or was cut off, or its subscription came late (the claim shows the task
running just before the worker subscribes, so a first start without a responder is asked again until the
start timeout). The socket asks the scheduler which it was before it tells the viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import deque

import nats.errors
from browserfleet_contracts import subjects
from browserfleet_contracts.eventstream import CloseCode
from browserfleet_contracts.live import (
    ENDED_FINISHED,
    ENDED_UNAVAILABLE,
    LIVE_IDLE_SECONDS,
    LIVE_KEEPALIVE_SECONDS,
    FrameMessage,
    HandoffMessage,
    Input,
    LiveEnded,
    LiveFrame,
    LiveHandoff,
    LiveInput,
    LiveMessage,
    LiveStartedMessage,
    LiveStartReply,
    LiveStartRequest,
    LiveStop,
)
from browserfleet_contracts.tasks import TaskPublic
from browserfleet_core.background import run_in_background
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter, Gauge
from pydantic import TypeAdapter, ValidationError

from .eventstream.socketbase import AuthedSocket, follow_credentials
from .settings import GatewaySettings

log = logging.getLogger(__name__)

VIEWERS = Gauge("browserfleet_gateway_live_viewers", "live-view sockets on this gateway")
FEEDS = Gauge("browserfleet_gateway_live_feeds", "attempts watched from this gateway")
DROPPED = Counter(
    "browserfleet_gateway_live_frames_dropped_total", "live-view frames a slow viewer did not get"
)
_MESSAGE: TypeAdapter[LiveFrame | LiveEnded | LiveHandoff] = TypeAdapter(LiveMessage)
# a first start that found no responder is asked again this often (within the start timeout)
START_RETRY_SECONDS = 0.25


class LiveUnavailable(Exception):
    """The attempt cannot be shown (not on a worker any more, refused by it, or it did not answer)."""

    def __init__(self, reason: str, *, unanswered: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unanswered = unanswered  # nobody answered: the run may be over, or its worker gone


class Viewer:
    """One socket's side of a feed: the frames it has not been sent yet, at most `limit` of them."""

    def __init__(self, feed: Feed, limit: int) -> None:
        self.feed = feed
        self.started = feed.started
        self._frames: deque[str] = deque()
        self._notices: deque[str] = deque()
        self._limit = limit
        self.wake = asyncio.Event()  # set when there is something to send (the socket shares it)
        self.ended: str | None = None
        self.dropped = 0

    def offer(self, text: str) -> None:
        if len(self._frames) >= self._limit:
            self._frames.popleft()  # the oldest: a live view shows now, not a backlog
            self.dropped += 1
            DROPPED.inc()
        self._frames.append(text)
        self.wake.set()

    def notify(self, text: str) -> None:
        """A message that is never dropped (a handoff began or ended): sent before any frame."""
        self._notices.append(text)
        self.wake.set()

    def take(self) -> str | None:
        if self._notices:
            return self._notices.popleft()
        return self._frames.popleft() if self._frames else None

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self.wake.set()


class Feed:
    def __init__(self, hub: LiveHub, task: TaskPublic, worker_id: str) -> None:
        self.hub = hub
        self.task_id = task.id
        self.attempt = task.attempt
        self.worker_id = worker_id
        # unique per feed: a late stop from a feed that just ended cannot stop the next one's screencast
        self.watcher = f"{hub.gateway_id}-{next(hub.serial)}"
        self.viewers: set[Viewer] = set()
        self.started = LiveStartedMessage(task_id=task.id, attempt=task.attempt)
        self.last_frame: str | None = None
        self.ended: str | None = None
        self.unanswered = False  # ended because nothing answered for the attempt (see the module docstring)
        self.opened: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Subscribes before asking, so the first frame cannot slip past; raises LiveUnavailable."""
        nc = self.hub.nc
        self._sub = await nc.subscribe(
            subjects.live_frames(self.task_id, self.worker_id), cb=self._on_message
        )
        try:
            reply = await self._first_answer()
        except nats.errors.NoRespondersError:
            self.unanswered = True
            raise LiveUnavailable(ENDED_FINISHED, unanswered=True) from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise LiveUnavailable(ENDED_UNAVAILABLE) from None
        if not reply.accepted:
            raise LiveUnavailable(reply.reason or ENDED_UNAVAILABLE)
        self.started = self.started.model_copy(
            update={
                "width": reply.width,
                "height": reply.height,
                "max_fps": reply.max_fps,
                "handoff": reply.handoff,
            }
        )
        self._renewer = asyncio.create_task(self._renew())

    async def _first_answer(self) -> LiveStartReply:
        """The worker's answer to the first start; no responder is asked again until the start timeout (the
        worker subscribes just after its claim, which already shows the task running)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.hub.settings.live_view_start_timeout_seconds
        while True:
            try:
                return await self._ask()
            except nats.errors.NoRespondersError:
                if loop.time() + START_RETRY_SECONDS >= give_up:
                    raise
            await asyncio.sleep(START_RETRY_SECONDS)

    async def _ask(self) -> LiveStartReply:
        req = LiveStartRequest(task_id=self.task_id, attempt=self.attempt, watcher=self.watcher)
        msg = await self.hub.nc.request(
            subjects.live_start(self.task_id, self.worker_id),
            req.model_dump_json().encode(),
            timeout=self.hub.settings.live_view_start_timeout_seconds,
        )
        try:
            return LiveStartReply.model_validate_json(msg.data)
        except ValidationError:
            return LiveStartReply(accepted=False, reason="the worker answered something else")

    async def _renew(self) -> None:
        """Keeps the worker casting while viewers stay; ends the feed when the run is over or unreachable."""
        silent_since: float | None = None
        loop = asyncio.get_running_loop()
        while self.ended is None:
            await asyncio.sleep(self.hub.keepalive_seconds)
            try:
                reply = await self._ask()
            except nats.errors.NoRespondersError:  # the attempt's subscription is gone, and it said nothing
                self.unanswered = True
                self.end(ENDED_FINISHED)
                return
            except (nats.errors.TimeoutError, TimeoutError):
                silent_since = silent_since if silent_since is not None else loop.time()
                if loop.time() - silent_since >= LIVE_IDLE_SECONDS:  # the worker has given up on us too
                    self.end(ENDED_UNAVAILABLE)
                    return
                continue
            except nats.errors.Error as exc:  # NATS reconnecting: the next renewal may pass
                log.info("live view of %s: renewal failed: %s", self.task_id, exc)
                continue
            silent_since = None
            if not reply.accepted:
                self.end(reply.reason or ENDED_UNAVAILABLE)
                return

    async def send_input(self, event: Input) -> None:
        """A person's input to the page, as this feed's watcher (the worker takes input from watchers only)."""
        if self.ended is not None or self.hub.nc.is_closed:
            return
        body = LiveInput(task_id=self.task_id, attempt=self.attempt, watcher=self.watcher, event=event)
        await self.hub.nc.publish(
            subjects.live_input(self.task_id, self.worker_id), body.model_dump_json().encode()
        )

    async def _on_message(self, msg: Msg) -> None:
        try:
            message = _MESSAGE.validate_json(msg.data)
        except ValidationError:
            log.warning("live view of %s: a malformed message on the frames subject", self.task_id)
            return
        if isinstance(message, LiveEnded):
            if message.attempt == self.attempt:
                self.end(message.reason)
            return
        if isinstance(message, LiveHandoff):
            if message.attempt == self.attempt and self.ended is None:
                self.started = self.started.model_copy(
                    update={"handoff": message.message if message.waiting else None}
                )
                notice = HandoffMessage(
                    task_id=self.task_id, waiting=message.waiting, message=message.message
                )
                text = notice.model_dump_json()
                for viewer in self.viewers:
                    viewer.notify(text)
            return
        if message.attempt != self.attempt or self.ended is not None:
            return
        # the client's FRAME is the worker's frame without the bus's routing (`kind`, `attempt`); made once,
        # whatever the number of viewers
        text = FrameMessage(**message.model_dump(exclude={"kind", "attempt"})).model_dump_json()
        self.last_frame = text
        for viewer in self.viewers:
            viewer.offer(text)

    def end(self, reason: str) -> None:
        """No more frames: every viewer is told, and the next viewer of this task gets a fresh feed."""
        if self.ended is not None:
            return
        self.ended = reason
        for viewer in self.viewers:
            viewer.end(reason)
        self.hub.forget(self)
        run_in_background(self.close(stop=False))

    async def close(self, *, stop: bool = True) -> None:
        if self._renewer is not None and self._renewer is not asyncio.current_task():
            self._renewer.cancel()
        sub, self._sub = self._sub, None
        nc = self.hub.nc
        if stop and not nc.is_closed:
            with contextlib.suppress(Exception):
                body = LiveStop(watcher=self.watcher).model_dump_json().encode()
                await nc.publish(subjects.live_stop(self.task_id, self.worker_id), body)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class LiveHub:
    """Every feed of this gateway process, by attempt, and the sockets watching them."""

    def __init__(self, nc: NatsClient, settings: GatewaySettings) -> None:
        self.nc = nc
        self.settings = settings
        self.gateway_id = uuid.uuid4().hex[:12]
        self.serial = itertools.count(1)
        self.keepalive_seconds = LIVE_KEEPALIVE_SECONDS
        self._feeds: dict[tuple[str, int], Feed] = {}
        self.viewers = 0
        self.sockets: set[AuthedSocket] = set()
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        self._subs = await follow_credentials(self.nc, self.sockets)

    def full(self) -> bool:
        return self.viewers >= self.settings.live_view_max_viewers

    async def join(self, task: TaskPublic, worker_id: str) -> Viewer:
        """A viewer of `task`'s running attempt on `worker_id`; raises LiveUnavailable."""
        key = (task.id, task.attempt)
        feed = self._feeds.get(key)
        if feed is None or feed.ended is not None:
            feed = Feed(self, task, worker_id)
            self._feeds[key] = feed
            FEEDS.set(len(self._feeds))
            feed.opened = asyncio.create_task(feed.open())
        assert feed.opened is not None
        try:
            await asyncio.shield(feed.opened)  # one viewer going away must not cancel the others' start
        except asyncio.CancelledError:  # this viewer left while the worker was asked: nobody may be left
            run_in_background(self._abandoned(feed))
            raise
        except LiveUnavailable as exc:
            if self._feeds.get(key) is feed:
                feed.end(exc.reason)
            raise
        except Exception as exc:
            log.warning("live view of %s could not start: %s", task.id, exc)
            if self._feeds.get(key) is feed:
                feed.end(ENDED_UNAVAILABLE)
            raise LiveUnavailable(ENDED_UNAVAILABLE) from None
        if feed.ended is not None:
            raise LiveUnavailable(feed.ended)
        viewer = Viewer(feed, self.settings.live_view_queue_frames)
        feed.viewers.add(viewer)
        self.viewers += 1
        VIEWERS.set(self.viewers)
        if feed.last_frame is not None:
            viewer.offer(feed.last_frame)
        return viewer

    async def _abandoned(self, feed: Feed) -> None:
        """Once its start is answered, a feed whose every viewer left meanwhile stops at once."""
        if feed.opened is not None:
            with contextlib.suppress(BaseException):
                await feed.opened
        if not feed.viewers and feed.ended is None:
            feed.ended = "no viewer left"
            self.forget(feed)
            await feed.close()

    async def leave(self, viewer: Viewer) -> None:
        feed = viewer.feed
        if viewer not in feed.viewers:
            return
        feed.viewers.discard(viewer)
        self.viewers -= 1
        VIEWERS.set(self.viewers)
        if not feed.viewers and feed.ended is None:
            feed.ended = "no viewer left"
            self.forget(feed)
            await feed.close()

    def forget(self, feed: Feed) -> None:
        key = (feed.task_id, feed.attempt)
        if self._feeds.get(key) is feed:
            del self._feeds[key]
            FEEDS.set(len(self._feeds))

    async def stop(self) -> None:
        for sub in self._subs:
            if not self.nc.is_closed:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        for socket in list(self.sockets):
            socket.end(CloseCode.GOING_AWAY, "the gateway is stopping; reconnect")
        for feed in list(self._feeds.values()):
            feed.end("the gateway is stopping")
            await feed.close()
