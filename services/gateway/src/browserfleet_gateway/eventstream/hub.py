"""One EVENTS consumer per gateway process, fanned out in process to the sockets subscribed by organization.

The hub reads the stream with an ordered push consumer (nats-py recreates it from the last stream sequence it
delivered after a gap or missed heartbeats, so nothing is skipped and nothing repeats) only while a socket is
subscribed: a gateway nobody watches through would otherwise receive and parse every event of every
organization, each replica all of them. The first subscription starts it right after the stream's last
message; it stops `idle_seconds` after the last one leaves. `position` is the last sequence it has handed
out. Handing an event out never awaits: each subscriber puts it on its socket's bounded queue or drops the
socket, so one slow client cannot hold up the others or the consumer.

`attach()` returns `position` once the consumer runs: every event after it reaches the new subscriber and
none before it does. That is the hand-over point a resuming client's replay ends at (see `session`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from browserfleet_contracts import subjects
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge

from .messages import Event, parse

log = logging.getLogger(__name__)

EVENTS_IN = Counter("browserfleet_gateway_ws_events_total", "EVENTS messages the gateway's event hub read")
SUBSCRIBERS = Gauge("browserfleet_gateway_ws_subscriptions", "event-stream subscriptions on this gateway")
# the hub's consumer buffers this many messages when the loop is busy; past it nats-py drops and the ordered
# consumer restarts from the last sequence it delivered (no loss, a short pause)
PENDING_MSGS = 100_000
# how long the consumer keeps running after the last socket left: a client that reconnects at once (a page
# reload, a rolling deploy's reconnect) finds it running
IDLE_SECONDS = 30.0


class Subscriber(Protocol):
    org_id: str

    def on_event(self, event: Event) -> None:
        """Take `event` without awaiting; must not attach or detach anyone (the hub is iterating)."""


class EventHub:
    def __init__(
        self, nc: NatsClient, *, retry_seconds: float = 1.0, idle_seconds: float = IDLE_SECONDS
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._retry = retry_seconds
        self._idle = idle_seconds
        self.position = 0
        self.ready = asyncio.Event()
        self._by_org: dict[str, set[Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None
        self._sub: object | None = None
        self._turn = asyncio.Lock()  # starting and stopping the consumer take turns
        self._stopper: asyncio.TimerHandle | None = None
        self._stopping: asyncio.Task[None] | None = None

    @property
    def reading(self) -> bool:
        """Whether the hub's consumer runs (a socket is subscribed, or the last left under `idle_seconds` ago)."""
        return self._sub is not None

    async def start(self) -> None:
        """Waits in the background for EVENTS to exist (the services declare it): the gateway serves HTTP
        meanwhile, and sockets are told the stream is starting until it does."""
        self._task = asyncio.create_task(self._wait_for_stream(), name="event-hub")

    async def _wait_for_stream(self) -> None:
        while True:
            try:
                await self._js.stream_info(subjects.EVENTS_STREAM)
                self.ready.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # nats-py turns a cancelled request into its TimeoutError: the stop() came meanwhile
                    raise asyncio.CancelledError from exc
                log.warning("event hub: EVENTS not readable yet (%s); retrying", exc)
                await asyncio.sleep(self._retry)

    async def _read(self) -> None:
        """Starts the consumer right after the stream's last message, unless it runs."""
        async with self._turn:
            if self._sub is not None:
                return
            info = await self._js.stream_info(subjects.EVENTS_STREAM)
            self.position = info.state.last_seq
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.position + 1
            )
            self._sub = await self._js.subscribe(
                subjects.EVENTS_ALL,
                stream=subjects.EVENTS_STREAM,
                cb=self._on_msg,
                ordered_consumer=True,
                config=config,
                pending_msgs_limit=PENDING_MSGS,
            )
            log.info("event hub reading EVENTS after #%d", self.position)

    async def _stop_reading(self) -> None:
        async with self._turn:
            if self._by_org or self._sub is None:
                return  # someone subscribed meanwhile
            sub, self._sub = self._sub, None
            unsubscribe = getattr(sub, "unsubscribe", None)
            if unsubscribe is not None and not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await unsubscribe()
            log.info("event hub stopped reading EVENTS at #%d: no socket subscribed", self.position)

    def _idle_stop(self) -> None:
        self._stopper = None
        if not self._by_org:
            self._stopping = asyncio.create_task(self._stop_reading(), name="event-hub-idle")

    async def _on_msg(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.position:
            return  # a recreated consumer's overlap
        self.position = seq
        EVENTS_IN.inc()
        event = parse(seq, msg.subject, msg.data)
        if event is None:
            return
        for sub in self._by_org.get(event.org_id, ()):
            sub.on_event(event)

    async def attach(self, sub: Subscriber) -> int:
        """Every event after the returned sequence goes to `sub`, none at or before it (the consumer is
        started first when it does not run; its failure to start is raised and `sub` is not attached)."""
        if self._stopper is not None:
            self._stopper.cancel()
            self._stopper = None
        await self._read()
        # no await from here on: nothing is handed out between reading `position` and adding `sub`
        self._by_org.setdefault(sub.org_id, set()).add(sub)
        SUBSCRIBERS.inc()
        return self.position

    def detach(self, sub: Subscriber) -> None:
        subs = self._by_org.get(sub.org_id)
        if subs is not None and sub in subs:
            subs.discard(sub)
            SUBSCRIBERS.dec()
            if not subs:
                del self._by_org[sub.org_id]
        if not self._by_org and self._sub is not None and self._stopper is None:
            self._stopper = asyncio.get_running_loop().call_later(self._idle, self._idle_stop)

    async def stop(self) -> None:
        if self._stopper is not None:
            self._stopper.cancel()
            self._stopper = None
        for task in (self._task, self._stopping):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._by_org.clear()
        await self._stop_reading()
