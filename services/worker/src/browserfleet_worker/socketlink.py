"""A remote worker's one connection to the platform: the WebSocket at the gateway's `/workers/ws`
(browserfleet_contracts.worker_socket; docs/websocket.md "Remote workers"), kept open with reconnections.

`run()` connects, says WORKER_CONNECT (with the tasks the worker still runs, so their leases go on), reads
frames and hands the unsolicited ones (TASK_ASSIGNED, CANCEL, DRAIN, CONNECTED) to `on_frame`; when the
socket dies it tries again with backoff (0.5 s doubling to 15 s, with jitter), forever, until stopped or the
key is refused (4401: nothing to gain by retrying). `call()` sends a frame that is answered (REPLY or ERROR
with its id) and sends it again after a reconnection, so every frame that must arrive (STARTED, LOG, RESULT,
a vault release request) is idempotent on the platform's side (message ids, the claim's attempt).

`SocketRpc` is an RpcClient whose requests travel as REQUEST frames, so everything the worker runs for a task
(its organization's policy, the vault's sealed release, profiles, an earlier artifact) is the same code in
both modes; `SocketJetStream` carries a task's security events as SECURITY frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import websockets
from browserfleet_contracts import subjects
from browserfleet_contracts.endpoints import Endpoint
from browserfleet_contracts.tasks import TaskUpdateMessage
from browserfleet_contracts.worker_socket import (
    FINAL_CLOSE_CODES,
    MAX_SOCKET_FRAME_BYTES,
    PATH,
    Connected,
    ErrorFrame,
    HeldTask,
    Reply,
    Request,
    Security,
    ServerFrame,
    SocketCloseCode,
    WorkerConnect,
)
from browserfleet_contracts.workers import DeviceInfo
from browserfleet_core.errors import ServiceError, Unavailable
from browserfleet_core.messaging import RpcClient, reply_adapter
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import PubAck
from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")

SERVER_FRAMES: TypeAdapter[Any] = TypeAdapter(ServerFrame)
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 15.0
CONNECT_TIMEOUT_SECONDS = 15.0  # the upgrade, and CONNECTED after WORKER_CONNECT


class Disconnected(Exception):
    """The socket went away before the frame was answered: it may be sent again once reconnected."""


class Retryable(ServiceError):
    """An ERROR the platform marked retryable (the bus was down): the same frame may succeed later."""


class KeyRefused(Exception):
    """The platform refused this worker's key (unknown, revoked): the worker stops."""


def socket_url(gateway_url: str) -> str:
    """`https://host[/prefix]` -> `wss://host[/prefix]/workers/ws` (a ws(s):// URL is taken as it is)."""
    url = gateway_url.rstrip("/")
    if url.startswith(("ws://", "wss://")):
        return url if url.endswith(PATH) else url + PATH
    if url.startswith("https://"):
        return "wss://" + url.removeprefix("https://") + PATH
    if url.startswith("http://"):
        return "ws://" + url.removeprefix("http://") + PATH
    raise ValueError(f"{gateway_url!r} is not an http(s):// or ws(s):// URL")


class SocketLink:
    def __init__(
        self,
        url: str,
        key: str,
        *,
        public_key: str | None,
        device_info: DeviceInfo | None,
        slots: Callable[[], int],
        held: Callable[[], list[HeldTask]],
        on_frame: Callable[[BaseModel], Awaitable[None]],
    ) -> None:
        self.url, self.key = url, key
        self.public_key, self.device_info = public_key, device_info
        self.slots, self.held, self.on_frame = slots, held, on_frame
        self.connected = asyncio.Event()
        self.stopped = asyncio.Event()
        self.refused: str | None = None  # why the key was refused (the worker stops)
        self.welcome: Connected | None = None
        self.connections = 0
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._send_lock = asyncio.Lock()

    # --- the connection, again and again ------------------------------------------------------------
    async def run(self) -> None:
        delay = BACKOFF_FIRST_SECONDS
        while not self.stopped.is_set():
            try:
                async with websockets.connect(
                    self.url,
                    max_size=MAX_SOCKET_FRAME_BYTES,
                    open_timeout=CONNECT_TIMEOUT_SECONDS,
                    close_timeout=5,
                    compression=None,
                ) as ws:
                    await self._hello(ws)
                    delay = BACKOFF_FIRST_SECONDS
                    await self._read(ws)
            except KeyRefused as exc:
                self.refused = str(exc)
                log.error("the platform refused this worker's key: %s", exc)
                self.stopped.set()
                break
            except (OSError, TimeoutError, ConnectionClosed, websockets.InvalidHandshake) as exc:
                if self.stopped.is_set():
                    break
                log.warning("socket to %s: %s; reconnecting in %.1f s", self.url, _why(exc), delay)
            finally:
                self._gone()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    async def close(self) -> None:
        self.stopped.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(SocketCloseCode.NORMAL, "the worker is stopping")

    async def _hello(self, ws: ClientConnection) -> None:
        hello = WorkerConnect(
            type="WORKER_CONNECT",
            api_key=self.key,
            slots=self.slots(),
            public_key=self.public_key,
            device_info=self.device_info,
            held=self.held(),
        )
        await ws.send(hello.model_dump_json())
        error: ErrorFrame | None = None
        try:
            while True:
                frame = _parse(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_SECONDS))
                if isinstance(frame, ErrorFrame):
                    error = frame  # the reason; the close follows
                elif isinstance(frame, Connected):
                    break
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code in FINAL_CLOSE_CODES:
                raise KeyRefused(
                    error.message if error is not None else (exc.rcvd.reason if exc.rcvd else "")
                ) from None
            raise
        self.welcome = frame
        self._ws = ws
        self.connections += 1
        self.connected.set()
        log.info(
            "connected to %s as worker %s (pool %s): %d task(s) resumed, %d lost",
            self.url,
            frame.worker_id,
            frame.pool,
            len(frame.resumed),
            len(frame.lost),
        )
        await self.on_frame(frame)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                frame = _parse(raw)
                if frame is None:
                    continue
                if isinstance(frame, Reply | ErrorFrame) and frame.id is not None:
                    waiter = self._pending.pop(frame.id, None)
                    if waiter is not None and not waiter.done():
                        if isinstance(frame, Reply):
                            waiter.set_result(frame)
                        else:
                            waiter.set_exception(_error(frame))
                    continue
                if isinstance(frame, ErrorFrame):
                    log.warning("the platform says: %s (%s)", frame.message, frame.code)
                    continue
                await self.on_frame(frame)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code in FINAL_CLOSE_CODES:
                raise KeyRefused(exc.rcvd.reason) from None
            raise
        if ws.close_code in FINAL_CLOSE_CODES:
            raise KeyRefused(ws.close_reason or "")
        if not self.stopped.is_set():
            log.warning("the platform closed the socket (%s %s)", ws.close_code, ws.close_reason)

    def _gone(self) -> None:
        self._ws = None
        self.connected.clear()
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(Disconnected())
        self._pending.clear()

    # --- sending --------------------------------------------------------------------------------------
    async def send(self, frame: BaseModel | bytes) -> None:
        """One frame that is not answered; Disconnected when there is no socket now."""
        ws = self._ws
        if ws is None:
            raise Disconnected()
        data = frame if isinstance(frame, bytes) else frame.model_dump_json()
        try:
            async with self._send_lock:
                await ws.send(data)
        except ConnectionClosed:
            raise Disconnected() from None

    async def send_quietly(self, frame: BaseModel) -> None:
        with contextlib.suppress(Disconnected):
            await self.send(frame)

    async def ask(self, build: Callable[[int], BaseModel], timeout: float) -> str | None:
        """Sends the frame `build(id)` makes once; its REPLY's data, or ServiceError from its ERROR."""
        frame_id = next(self._ids)
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[frame_id] = waiter
        try:
            await self.send(build(frame_id))
            reply = await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise Unavailable("the platform did not answer in time", code="socket_timeout") from None
        finally:
            self._pending.pop(frame_id, None)
        return reply.data

    async def call(
        self,
        build: Callable[[int], BaseModel],
        *,
        timeout: float,
        give_up: asyncio.Event | None = None,
        patience: float | None = None,
    ) -> str | None:
        """`ask`, sent again after each reconnection (and after a retryable ERROR) until answered, `give_up`
        is set, or `patience` seconds pass without a socket: then Unavailable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience if patience is not None else None
        pause = BACKOFF_FIRST_SECONDS
        while True:
            if give_up is not None and give_up.is_set():
                raise Unavailable("given up: the worker is stopping", code="stopping")
            if not self.connected.is_set():
                left = None if deadline is None else deadline - loop.time()
                if (left is not None and left <= 0) or self.stopped.is_set():
                    raise Unavailable("not connected to the platform", code="not_connected")
                await _first(self.connected, give_up, self.stopped, timeout=left)
                continue
            try:
                return await self.ask(build, timeout)
            except Disconnected:
                continue
            except Retryable as exc:
                if deadline is not None and loop.time() > deadline:
                    raise
                log.info("the platform cannot act on it now (%s); sending it again", exc.message)
                await asyncio.sleep(pause)
                pause = min(pause * 2, BACKOFF_MAX_SECONDS)


class SocketRpc(RpcClient):
    """The worker's requests as REQUEST frames: what runs a task calls `rpc.call(endpoint, request)` the same
    way in both modes. A request waits for a reconnection (up to its timeout) rather than failing at once."""

    def __init__(self, link: SocketLink, *, timeout: float = 10.0) -> None:
        super().__init__(NatsClient(), timeout=timeout)  # never connected: nothing here reaches NATS
        self.link = link

    async def call(self, endpoint: Endpoint[Req, Rep], request: Req, *, timeout: float | None = None) -> Rep:
        return await self._relay(endpoint, json.loads(request.model_dump_json()), timeout)

    async def call_raw(
        self, endpoint: Endpoint[Any, Rep], body: Mapping[str, Any], *, timeout: float | None = None
    ) -> Rep:
        return await self._relay(endpoint, dict(body), timeout)

    async def _relay(self, endpoint: Endpoint[Any, Rep], body: dict[str, Any], timeout: float | None) -> Rep:
        wait = timeout or self.timeout
        data = await self.link.call(
            lambda frame_id: Request(type="REQUEST", id=frame_id, endpoint=endpoint.subject, body=body),
            timeout=wait,
            patience=max(wait, 30.0),
        )
        if data is None:
            raise Unavailable(f"{endpoint.subject} answered nothing", code="empty_reply")
        reply_type: Any = endpoint.reply
        if isinstance(reply_type, type) and issubclass(reply_type, BaseModel):
            return reply_type.model_validate_json(data)  # type: ignore[return-value]
        return reply_adapter(reply_type).validate_json(data)  # type: ignore[no-any-return]


class SocketJetStream(JetStreamContext):
    """The one JetStream publication a task's code makes itself, a blocked request's security event on
    TASK_UPDATES (orgpolicy.SecurityEvents), sent as a SECURITY frame; anything else is refused."""

    def __init__(self, link: SocketLink, timeout: float) -> None:
        super().__init__(NatsClient())  # never connected
        self.link, self.rpc_timeout = link, timeout

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,
        stream: str | None = None,
        headers: dict[str, Any] | None = None,
        msg_ttl: float | None = None,
    ) -> PubAck:
        update = TaskUpdateMessage.model_validate_json(payload)
        if stream != subjects.TASK_UPDATES_STREAM or update.kind != "security" or update.security is None:
            raise NotImplementedError(f"a remote worker does not publish on {subject}")
        data = update.security
        seq = "summary" if data.get("summary") else str(data.get("seq"))
        await self.link.call(
            lambda frame_id: Security(
                type="SECURITY",
                id=frame_id,
                task_id=update.task_id,
                attempt=update.attempt,
                seq=seq,
                data=data,
            ),
            timeout=timeout or self.rpc_timeout,
            patience=30.0,
        )
        return PubAck(stream=subjects.TASK_UPDATES_STREAM, seq=0)


async def _first(*events: asyncio.Event | None, timeout: float | None) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events if e is not None]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _parse(raw: str | bytes) -> Any:
    if isinstance(raw, bytes):
        log.warning("ignoring a binary frame from the platform")
        return None
    try:
        return SERVER_FRAMES.validate_json(raw)
    except ValidationError:
        log.warning("ignoring a frame the platform sent that this worker does not know: %.200s", raw)
        return None


def _error(frame: ErrorFrame) -> ServiceError:
    kind = Retryable if frame.retryable else ServiceError
    return kind(frame.message, field=frame.field, code=frame.code, status=frame.status)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        got = exc.rcvd
        return f"closed ({got.code} {got.reason})" if got is not None else "connection lost"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
