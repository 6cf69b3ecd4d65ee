"""One authenticated event-stream socket: its messages, its subscription, its writer and how it ends.

Three things run per socket: the reader (client messages, rate limited), the writer (drains the bounded
`SendQueue` onto the socket, at whatever pace the client reads), and, while a resuming subscription catches
up, its replay. Whatever ends the socket (the client, a slow-consumer drop, the credential's expiry, abuse,
the gateway stopping) goes through `end()`, and `run()` closes once with that code.

Resume without gap or duplicate: SUBSCRIBE with `since` attaches the subscription to the hub first, holding
the live events it receives from then on (`pending`, bounded); `attach` says which stream sequence the live
part starts after. The replay reads the organization's events from `since` up to that sequence, then the held
events are delivered, all without awaiting, and the subscription is live. Each subscription keeps the last
sequence it has passed (`cursor`), and nothing at or below it is delivered again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

from browserfleet_contracts.events import EventType
from browserfleet_contracts.eventstream import (
    ClientMessage,
    CloseCode,
    ErrorMessage,
    Pong,
    Subscribed,
    SubscribeMessage,
    Unsubscribed,
    channel,
)
from fastapi import WebSocket
from nats.js import JetStreamContext
from prometheus_client import Counter
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect

from ..middleware import ABORT_SCOPE_KEY
from ..ratelimit import RateLimiter
from ..settings import GatewaySettings
from .auth import SocketIdentity
from .hub import EventHub
from .messages import Event
from .outbound import SendQueue, TypeFilter, selects
from .replay import replay, stream_state
from .socketbase import AuthedSocket, authenticated

log = logging.getLogger(__name__)

CLOSED = Counter("browserfleet_gateway_ws_closed_total", "event-stream sockets closed, by code", ["code"])
_CLIENT_MESSAGE: TypeAdapter[Any] = TypeAdapter(ClientMessage)


def dump(message: BaseModel) -> str:
    return message.model_dump_json()


class Subscription:
    """The socket's subscription to its organization's channel, as the hub sees it."""

    __slots__ = ("cursor", "org_id", "pending", "session", "task_id", "types")

    def __init__(self, session: Session, org_id: str, msg: SubscribeMessage) -> None:
        self.session = session
        self.org_id = org_id
        self.types = TypeFilter(msg.types)
        self.task_id = msg.task_id
        self.cursor = 0
        self.pending: deque[Event] | None = None

    def on_event(self, event: Event) -> None:
        if self.pending is not None:  # a replay is catching up: hold live events until it has
            if len(self.pending) >= self.session.settings.ws_resume_buffer:
                self.session.drop_slow()
            else:
                self.pending.append(event)
            return
        self.deliver(event)

    def deliver(self, event: Event) -> None:
        if event.seq <= self.cursor:
            return
        self.cursor = event.seq
        if selects(self.types, self.task_id, event) and not self.session.queue.offer(event.text):
            self.session.drop_slow()
        if event.type == EventType.ORGANIZATION_DELETED:
            self.session.end(CloseCode.UNAUTHORIZED, "organization deleted")

    async def catch_up(self, replayed: Event) -> None:
        if replayed.seq <= self.cursor:
            return
        self.cursor = replayed.seq
        if selects(self.types, self.task_id, replayed):
            await self.session.queue.put(replayed.text)

    def go_live(self) -> None:
        held, self.pending = self.pending or deque(), None
        for event in held:
            self.deliver(event)


class Session(AuthedSocket):
    """One event-stream socket. A user's role change leaves it open: every role may read the stream."""

    def __init__(
        self,
        ws: WebSocket,
        identity: SocketIdentity,
        *,
        hub: EventHub,
        js: JetStreamContext,
        settings: GatewaySettings,
        authenticate: Callable[[str], Awaitable[SocketIdentity]],
    ) -> None:
        super().__init__(ws, identity, settings, authenticate)
        self.hub = hub
        self.js = js
        self.org_id = identity.principal.org_id
        self.queue = SendQueue(settings.ws_send_queue)
        self.subscription: Subscription | None = None
        self._replay: asyncio.Task[None] | None = None
        self._messages = RateLimiter(settings.ws_messages_per_second, settings.ws_messages_burst)
        self._subscribes = RateLimiter(settings.ws_subscribes_per_second, settings.ws_subscribes_burst)
        self.last_seen = asyncio.get_running_loop().time()  # the last client message (idle sweep)

    def drop_slow(self) -> None:
        self.end(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect with since=<last seq received>")

    # --- the socket's life -------------------------------------------------------------------------
    async def run(self) -> None:
        self._reply(authenticated(self.identity))
        reader, writer = await self._run_until_ended(self._detach)
        # the client is gone when it closed (the reader saw it) or a send to it failed (the writer ended)
        gone = (_finished(reader) and reader.result() is True) or (writer.done() and not writer.cancelled())
        if gone:
            CLOSED.labels("client").inc()
            return
        await self._close(*self._asked_ending())

    async def _close(self, code: int, reason: str, error: ErrorMessage | None) -> None:
        CLOSED.labels(str(code)).inc()
        # the close frame queues behind what the client has not read yet; one that reads nothing more within
        # the grace period is cut off, so a dropped client cannot keep its buffers on this gateway
        try:
            async with asyncio.timeout(self.settings.ws_close_grace_seconds):
                if error is not None:
                    await self.ws.send_text(dump(error))
                await self.ws.close(code, reason)
        except TimeoutError:
            abort = self.ws.scope.get(ABORT_SCOPE_KEY)
            if callable(abort):
                abort()
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass

    def _detach(self) -> None:
        if self._replay is not None:
            self._replay.cancel()
            self._replay = None
        if self.subscription is not None:
            self.hub.detach(self.subscription)
            self.subscription = None

    async def _write(self) -> None:
        while True:
            text = await self.queue.get()
            await self.ws.send_text(text)

    async def _read(self) -> bool:
        """Handles client messages until the client goes (True) or the socket is ending (False). Idle
        sockets are found by `EventStream`'s sweep over `last_seen`, not by a timer per socket."""
        loop = asyncio.get_running_loop()
        while not self._ending.done():
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return True
            self.last_seen = loop.time()
            try:
                await self._handle(message.get("text"), message.get("bytes"))
            except Exception:
                log.exception("event stream: handling a client message failed")
                self.end(CloseCode.INTERNAL_ERROR, "internal error; reconnect with since")
        return False

    # --- client messages -----------------------------------------------------------------------------
    def _reply(self, message: BaseModel) -> None:
        # replies pile up only for a client that keeps sending and never reads
        if not self.queue.reply(dump(message)):
            self.end(CloseCode.TOO_MANY_MESSAGES, "too many messages")

    async def _handle(self, text: str | None, data: bytes | None) -> None:
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > self.settings.ws_max_message_bytes:
            self.end(
                CloseCode.MESSAGE_TOO_BIG, f"messages are at most {self.settings.ws_max_message_bytes} bytes"
            )
            return
        if not self._allowed(self._messages):
            return
        if text is None:
            self._error("invalid_message", "messages are JSON text frames, not binary")
            return
        try:
            doc = json.loads(text)
        except ValueError:
            self._error("invalid_json", "the message is not JSON")
            return
        try:
            msg = _CLIENT_MESSAGE.validate_python(doc)
        except ValidationError as exc:
            self._error(*_invalid(exc))
            return
        if msg.type == "PING":
            self._reply(Pong())
        elif msg.type == "AUTH":
            await self._reauthenticate(msg.token)
        elif msg.channel != channel(self.org_id):
            self._error(
                "forbidden_channel", f"you may subscribe to {channel(self.org_id)} only", field="channel"
            )
        elif msg.type == "UNSUBSCRIBE":
            self._detach()
            self._reply(Unsubscribed(channel=msg.channel))
        elif self._allowed(self._subscribes):
            await self._subscribe(msg)

    async def _subscribe(self, msg: SubscribeMessage) -> None:
        if not self.hub.ready.is_set():
            self._error("unavailable", "the event stream is starting; subscribe again in a moment")
            return
        self._detach()
        sub = Subscription(self, self.org_id, msg)
        if msg.since is not None:
            sub.pending = deque()  # live events after the hand-over are held until the replay is done
        try:
            position = await self.hub.attach(sub)
        except Exception as exc:  # the hub could not start reading EVENTS (NATS unreachable, say)
            log.warning("event hub could not start for %s: %s", self.org_id, exc)
            self._error(
                "unavailable", "the event stream is not readable right now; subscribe again in a moment"
            )
            return
        if self.ended:
            self.hub.detach(sub)  # the socket went while the hub started
            return
        self.subscription = sub
        if msg.since is None:
            sub.cursor = position
            self._reply(_subscribed(msg, sub.cursor))
            return
        sub.cursor = msg.since
        state = (await stream_state(self.js)).state
        if self.subscription is not sub:
            return  # replaced while we asked
        if msg.since > state.last_seq:
            self._detach()
            self._error(
                "invalid_since", f"since is past the stream's last sequence ({state.last_seq})", "since"
            )
            return
        gap = msg.since + 1 < state.first_seq
        self._reply(_subscribed(msg, max(position, msg.since), gap=gap))
        self._replay = asyncio.create_task(self._catch_up(sub, msg.since, position))

    async def _catch_up(self, sub: Subscription, since: int, upto: int) -> None:
        try:
            async with aclosing(replay(self.js, self.org_id, since, upto)) as events:
                async for event in events:
                    await sub.catch_up(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replay for %s after #%d failed", self.org_id, since)
            self.end(CloseCode.TRY_AGAIN_LATER, "replay failed; reconnect with since")
            return
        if self.subscription is sub:
            sub.go_live()


def _subscribed(msg: SubscribeMessage, seq: int, *, gap: bool = False) -> Subscribed:
    return Subscribed(
        channel=msg.channel, seq=seq, since=msg.since, gap=gap, types=msg.types, task_id=msg.task_id
    )


def _invalid(exc: ValidationError) -> tuple[str, str, str | None]:
    """(code, message, field) of the first thing wrong with a client message."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return "unknown_type", "type must be one of AUTH, SUBSCRIBE, UNSUBSCRIBE, PING", "type"
    if err["type"] == "model_type" or not loc:
        return "invalid_message", "a message is a JSON object with a `type`", None
    field = ".".join(loc[1:]) or loc[0]
    return "invalid_message", f"{field}: {err['msg']}", field


def _finished(task: asyncio.Task[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None
