"""One live-view socket (`GET /api/v1/tasks/{task_id}/live`, docs/liveview.md), from the upgrade
to its close.

Authenticated like the event stream (header, single-use ticket or a first AUTH message; `eventstream.auth`)
and authorised like reading the task: the scheduler answers the task for the caller's organization only, so
another organization's task is "not found" (close 4404), never a hint that it exists. A task that is not
running gets LIVE_ENDED with its status (so does one whose worker stopped answering: "worker unavailable" while
the task still runs that attempt, "task finished" once it does not). Then LIVE_STARTED, FRAME messages as the worker sends them, and
LIVE_ENDED when the run is over; the client may send PING and AUTH (a fresh token extends the socket past the
old one's expiry). A malformed message gets an ERROR and the socket stays; a flood is closed (4429).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections import deque
from typing import Annotated, Any

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import UserState
from browserfleet_contracts.eventstream import (
    AuthMessage,
    CloseCode,
    ErrorMessage,
    PingMessage,
    Pong,
)
from browserfleet_contracts.live import (
    ENDED_FINISHED,
    ENDED_NOT_RUNNING,
    ENDED_UNAVAILABLE,
    ContinueInput,
    Input,
    KeyInput,
    LiveEndedMessage,
    MouseInput,
)
from browserfleet_contracts.tasks import GetTaskRequest, TaskPublic
from browserfleet_core.errors import Forbidden, NotFound, ServiceError
from fastapi import WebSocket
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect

from .deps import AccessRule, Principal, admit
from .eventstream.auth import Refused, SocketIdentity, identify, identify_token
from .eventstream.socketbase import AuthedSocket, authenticated
from .liveview import LiveHub, LiveUnavailable, Viewer
from .ratelimit import RateLimiter
from .runtime import GatewayState

log = logging.getLogger(__name__)

# who may watch: whoever may read the task (every member of its organization, keys with tasks:read)
RULE = AccessRule(min_role="viewer", scopes=("tasks:read",), note="watch a running task, like reading it")
# who may also drive it: whoever may change the task (they could submit any steps anyway)
TAKEOVER = AccessRule(min_role="user", scopes=("tasks:write",), note="mouse and keyboard on a watched task")
_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# what a viewer may send: the event stream's PING and AUTH, and a takeover's INPUT
_CLIENT: TypeAdapter[Any] = TypeAdapter(
    Annotated[AuthMessage | PingMessage | Input, Field(discriminator="type")]
)
_RANK = {"viewer": 0, "user": 1, "admin": 2}
_CONTROL_LIMIT = 64  # replies waiting for a client that sends and never reads


async def serve(ws: WebSocket, state: GatewayState | None, task_id: str) -> None:
    await ws.accept()
    if state is None or state.live is None or state.events is None or state.rpc is None:
        await _close(ws, CloseCode.TRY_AGAIN_LATER, "the gateway is starting")
        return
    hub, settings = state.live, state.settings
    if hub.full():
        await _close(ws, CloseCode.TRY_AGAIN_LATER, "too many live viewers on this gateway; try later")
        return
    try:
        identity = await identify(
            ws,
            state,
            state.events.tickets,
            RULE,
            auth_timeout=settings.ws_auth_timeout_seconds,
            max_message_bytes=settings.ws_max_message_bytes,
        )
        principal = admit(
            RULE, identity.principal
        )  # a ticket carries who asked; this socket's rule still applies
    except Refused as exc:
        if exc.code != CloseCode.NORMAL:
            await _close(ws, exc.code, exc.error.message, exc.error)
        return
    except Forbidden as exc:
        await _close(ws, CloseCode.FORBIDDEN, exc.message, ErrorMessage(code=exc.code, message=exc.message))
        return
    except ServiceError as exc:  # auth or the JWKS could not answer: not the client's fault
        log.warning("live view: cannot authenticate a socket now: %s", exc)
        await _close(ws, CloseCode.TRY_AGAIN_LATER, "authentication unavailable; retry")
        return
    await _send(ws, authenticated(identity))
    task = await _task(ws, state, principal, task_id)
    if task is None:
        return
    if task.status != "running" or not task.worker_id:
        await _end(ws, task.id, ENDED_NOT_RUNNING, task.status)
        return
    try:
        viewer = await hub.join(task, task.worker_id)
    except LiveUnavailable as exc:
        if exc.unanswered:
            reason, status = await _unanswered(state, principal, task.id, task.attempt)
            await _end(ws, task.id, reason, status)
        else:
            await _end(ws, task.id, exc.reason, task.status)
        return
    try:
        await LiveSocket(ws, state, hub, viewer, identity).run()
    finally:
        await hub.leave(viewer)


async def _unanswered(
    state: GatewayState, principal: Principal, task_id: str, attempt: int
) -> tuple[str, str | None]:
    """LIVE_ENDED's reason and status when nothing answered for `attempt` (Feed.unanswered): the task still
    running it means its worker is gone (crashed, cut off), not that the run is over."""
    assert state.rpc is not None
    try:
        task: TaskPublic = await state.rpc.call(
            endpoints.Scheduler.GET_TASK, GetTaskRequest(actor=principal.actor, task_id=task_id)
        )
    except ServiceError as exc:  # nobody can tell: not "finished"
        log.info("live view: reading task %s after its worker went silent failed: %s", task_id, exc)
        return ENDED_UNAVAILABLE, None
    if task.status == "running" and task.attempt == attempt:
        return ENDED_UNAVAILABLE, task.status
    return ENDED_FINISHED, task.status


async def _task(ws: WebSocket, state: GatewayState, principal: Principal, task_id: str) -> TaskPublic | None:
    """The task as its organization sees it, or None once the socket is closed (4404: not found)."""
    assert state.rpc is not None
    not_found = ErrorMessage(code="task_not_found", message="task not found", field="task_id")
    if not _TASK_ID.match(task_id):
        await _close(ws, CloseCode.NOT_FOUND, "task not found", not_found)
        return None
    try:
        task: TaskPublic = await state.rpc.call(
            endpoints.Scheduler.GET_TASK, GetTaskRequest(actor=principal.actor, task_id=task_id)
        )
    except ServiceError as exc:
        if exc.status == NotFound.status:  # another organization's task too: it does not exist for this one
            await _close(ws, CloseCode.NOT_FOUND, "task not found", not_found)
            return None
        log.warning("live view: reading task %s failed: %s", task_id, exc)
        await _close(ws, CloseCode.TRY_AGAIN_LATER, "the scheduler did not answer; retry")
        return None
    return task


class LiveSocket(AuthedSocket):
    """A watching socket: the writer sends replies first, then frames; the reader handles client messages;
    whatever ends it (the run, the client, the credential's expiry, abuse) closes it once."""

    def __init__(
        self, ws: WebSocket, state: GatewayState, hub: LiveHub, viewer: Viewer, identity: SocketIdentity
    ) -> None:
        ip = ws.client.host if ws.client else None
        super().__init__(ws, identity, state.settings, lambda token: identify_token(state, RULE, token, ip))
        self.state = state
        self.hub = hub
        self.viewer = viewer
        self._control: deque[str] = deque([viewer.started.model_dump_json()])
        self._wake = viewer.wake  # set for a reply and for a frame alike: one writer sends both
        self._gone = False  # the client went away: nothing to close
        self._messages = RateLimiter(self.settings.ws_messages_per_second, self.settings.ws_messages_burst)
        self._inputs = RateLimiter(
            self.settings.live_view_inputs_per_second, self.settings.live_view_inputs_burst
        )
        self._drove = False

    async def run(self) -> None:
        self.hub.sockets.add(self)
        await self._run_until_ended(lambda: self.hub.sockets.discard(self))
        if self._gone:
            return
        code, reason, error = self._asked_ending()
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError, TimeoutError):
            async with asyncio.timeout(self.settings.ws_close_grace_seconds):
                await self._flush()
                if error is not None:
                    await self.ws.send_text(error.model_dump_json())
                await self.ws.close(code, reason[:120])

    # --- writing -----------------------------------------------------------------------------------------
    def _reply(self, message: BaseModel) -> None:
        if len(self._control) >= _CONTROL_LIMIT:
            self.end(CloseCode.TOO_MANY_MESSAGES, "too many messages")
            return
        self._control.append(message.model_dump_json())
        self._wake.set()

    async def _flush(self) -> None:
        while self._control:
            await self.ws.send_text(self._control.popleft())

    async def _write(self) -> None:
        """Replies first, then the viewer's next frame, at the pace the client reads (the viewer's queue drops
        the oldest frames meanwhile); LIVE_ENDED once the feed ended and its last frames went out."""
        try:
            while True:
                self._wake.clear()
                await self._flush()
                frame = self.viewer.take()
                if frame is not None:
                    await self.ws.send_text(frame)
                    continue
                if self.viewer.ended is not None:
                    feed = self.viewer.feed
                    reason, status = self.viewer.ended, None
                    if feed.unanswered:
                        principal = self.identity.principal
                        reason, status = await _unanswered(self.state, principal, feed.task_id, feed.attempt)
                    ended = LiveEndedMessage(task_id=feed.task_id, reason=reason, status=status)
                    await self.ws.send_text(ended.model_dump_json())
                    self.end(CloseCode.NORMAL, "live view ended")
                    return
                await self._wake.wait()
        except (WebSocketDisconnect, OSError, RuntimeError):
            self._gone = True

    # --- reading -----------------------------------------------------------------------------------------
    async def _read(self) -> bool:
        """Handles client messages until the client goes (True) or the socket is ending (False)."""
        while not self._ending.done():
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self._gone = True
                return True
            await self._handle(message.get("text"), message.get("bytes"))
        return False

    async def _handle(self, text: str | None, data: bytes | None) -> None:
        limit = self.settings.ws_max_message_bytes
        if len(text.encode() if text is not None else data or b"") > limit:
            self.end(CloseCode.MESSAGE_TOO_BIG, f"messages are at most {limit} bytes")
            return
        try:
            msg = _CLIENT.validate_python(json.loads(text)) if text is not None else None
        except ValueError as exc:  # not JSON, or not one of ours (ValidationError is a ValueError)
            if self._allowed(self._messages):
                self._error(*_invalid(exc))
            return
        # a hand on the mouse sends far more than a program's PINGs: input has its own, wider, allowance
        is_input = isinstance(msg, MouseInput | KeyInput | ContinueInput)
        if not self._allowed(self._inputs if is_input else self._messages):
            return
        if msg is None:
            self._error("invalid_message", "messages are JSON text frames, not binary")
        elif isinstance(msg, AuthMessage):
            await self._reauthenticate(msg.token)
        elif isinstance(msg, MouseInput | KeyInput | ContinueInput):
            await self._take_over(msg)
        else:
            self._reply(Pong())

    async def _take_over(self, event: MouseInput | KeyInput | ContinueInput) -> None:
        if not _may_drive(self.identity.principal):
            self._error("forbidden", "taking over needs the user role or an API key with tasks:write", "type")
            return
        if not self._drove:  # who drove which task's browser is worth a line; what they typed never is
            self._drove = True
            actor = self.identity.principal.actor
            log.info(
                "live view: %s of org %s takes over task %s",
                actor.user_id or f"API key {actor.api_key_id}",
                actor.org_id,
                self.viewer.feed.task_id,
                extra={"event": "live.takeover", "task_id": self.viewer.feed.task_id, "org_id": actor.org_id},
            )
        await self.viewer.feed.send_input(event)

    def user_changed(self, state: UserState) -> bool:
        """A demotion holds at once too: a viewer may still watch, no longer drive."""
        stays = super().user_changed(state)
        actor = self.identity.principal.actor
        if stays and _RANK[state.role] < _RANK[actor.role]:
            principal = dataclasses.replace(
                self.identity.principal, actor=actor.model_copy(update={"role": state.role})
            )
            self.identity = dataclasses.replace(self.identity, principal=principal)
        return stays


def _may_drive(principal: Principal) -> bool:
    try:
        admit(TAKEOVER, principal)
        return True
    except Forbidden:
        return False


def _invalid(exc: ValueError) -> tuple[str, str, str | None]:
    """(code, message, field) of what is wrong with a client message."""
    if not isinstance(exc, ValidationError):
        return "invalid_json", "the message is not JSON", None
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        if loc:  # an INPUT without a known kind
            return "invalid_message", "kind must be mouse or key", "kind"
        return "unknown_type", "type must be PING, AUTH or INPUT", "type"
    if err["type"] == "model_type" or not loc:
        return "invalid_message", "a message is a JSON object with a `type`", None
    tags = 2 if loc[0] == "INPUT" else 1  # the union's tags: the `type`, and an INPUT's `kind`
    field = ".".join(loc[tags:]) or loc[-1]
    return "invalid_message", f"{field}: {err['msg']}", field


async def _send(ws: WebSocket, message: BaseModel) -> None:
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await ws.send_text(message.model_dump_json())


async def _end(ws: WebSocket, task_id: str, reason: str, status: str | None) -> None:
    await _send(ws, LiveEndedMessage(task_id=task_id, reason=reason, status=status))
    await _close(ws, CloseCode.NORMAL, "live view ended")


async def _close(ws: WebSocket, code: int, reason: str, error: ErrorMessage | None = None) -> None:
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        if error is not None:
            await ws.send_text(error.model_dump_json())
        await ws.close(code, reason[:120])
