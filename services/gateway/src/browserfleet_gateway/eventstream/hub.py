"""One EVENTS consumer per gateway process, fanned out in process to the sockets subscribed by organization.

The hub reads the whole stream with an ordered push consumer (nats-py recreates it from the last stream
sequence it delivered after a gap or missed heartbeats, so nothing is skipped and nothing repeats), starting
right after the stream's last message when the gateway starts. `position` is the last sequence it has handed
out. Handing an event out never awaits: each subscriber puts it on its socket's bounded queue or drops the
socket, so one slow client cannot hold up the others or the consumer.

`attach()` returns `position` without awaiting: every event after it reaches the new subscriber and none
before it does. That is the hand-over point a resuming client's replay ends at (see `session`).
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


class Subscriber(Protocol):
    org_id: str

    def on_event(self, event: Event) -> None:
        """Take `event` without awaiting; must not attach or detach anyone (the hub is iterating)."""


class EventHub:
    def __init__(self, nc: NatsClient, *, retry_seconds: float = 1.0) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._retry = retry_seconds
        self.position = 0
        self.ready = asyncio.Event()
        self._by_org: dict[str, set[Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None
        self._sub: object | None = None

    async def start(self) -> None:
        """Begins reading in the background: the gateway serves HTTP while EVENTS is not there yet (the
        services declare it), and sockets are told the stream is starting until it is."""
        self._task = asyncio.create_task(self._connect(), name="event-hub")

    async def _connect(self) -> None:
        while True:
            try:
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
                self.ready.set()
                log.info("event hub reading EVENTS after #%d", self.position)
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

    def attach(self, sub: Subscriber) -> int:
        """Every event after the returned sequence goes to `sub`, none at or before it."""
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

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        unsubscribe = getattr(self._sub, "unsubscribe", None)
        if unsubscribe is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await unsubscribe()
        self._by_org.clear()
