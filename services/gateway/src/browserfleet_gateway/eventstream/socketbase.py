"""What the event stream's and the live view's sockets share once authenticated: one end (the first request
wins) and the close it asks for, the credential's expiry, AUTH with a fresh token for the same holder, a
strike count for floods, and the key revocations and user changes that end them like an HTTP request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import ApiKeyRevoked, UserChanged, UserState
from browserfleet_contracts.eventstream import Authenticated, CloseCode, ErrorMessage
from browserfleet_core.errors import RateLimited
from fastapi import WebSocket
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from pydantic import BaseModel

from .. import notices
from ..ratelimit import RateLimiter
from ..settings import GatewaySettings
from .auth import Refused, SocketIdentity

# what `end()` asks for: the close code, its reason, and an ERROR message sent before the close
Ending = tuple[int, str, ErrorMessage | None]


class AuthedSocket:
    """An authenticated socket: a reader of client messages and a writer, until one of them stops or
    `end()` is asked. Subclasses say how a reply is queued (`_reply`) and what the reader and writer do."""

    def __init__(
        self,
        ws: WebSocket,
        identity: SocketIdentity,
        settings: GatewaySettings,
        authenticate: Callable[[str], Awaitable[SocketIdentity]],
    ) -> None:
        self.ws = ws
        self.identity = identity
        self.settings = settings
        self._authenticate = authenticate
        self._ending: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()
        self._strikes = 0
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def ended(self) -> bool:
        return self._ending.done()

    @property
    def key_id(self) -> str | None:
        return self.identity.key_id

    def end(self, code: int, reason: str, error: ErrorMessage | None = None) -> None:
        """Ask for the socket to close with `code` (the first request wins); never awaits."""
        if not self._ending.done():
            self._ending.set_result((code, reason, error))

    def _reply(self, message: BaseModel) -> None:
        raise NotImplementedError

    async def _read(self) -> bool:
        """Handles client messages until the client goes (True) or the socket is ending (False)."""
        raise NotImplementedError

    async def _write(self) -> None:
        raise NotImplementedError

    # --- the socket's life -------------------------------------------------------------------------
    async def _run_until_ended(
        self, stopping: Callable[[], None]
    ) -> tuple[asyncio.Task[bool], asyncio.Task[None]]:
        """Runs the reader and the writer until either finishes or `end()` is asked; `stopping` runs first
        when they stop, and both are done (and the expiry disarmed) when they are returned."""
        self._arm_expiry()
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write())
        try:
            watched: set[asyncio.Future[Any]] = {reader, writer, self._ending}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping()
            if self._expiry is not None:
                self._expiry.cancel()
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        return reader, writer

    def _asked_ending(self) -> Ending:
        """What `end()` asked for; an internal error when the reader or the writer failed before anything did."""
        if self._ending.done():
            return self._ending.result()
        return CloseCode.INTERNAL_ERROR, "internal error", None

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expires_at = self.identity.expires_at
        if expires_at is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, (expires_at - datetime.now(UTC)).total_seconds())
        error = ErrorMessage(
            code="token_expired", message="the credential expired; reconnect with a fresh one"
        )
        self._expiry = loop.call_later(delay, self.end, CloseCode.UNAUTHORIZED, "token expired", error)

    # --- client messages -----------------------------------------------------------------------------
    def _error(self, code: str, message: str, field: str | None = None) -> None:
        self._reply(ErrorMessage(code=code, message=message, field=field))

    def _allowed(self, limiter: RateLimiter) -> bool:
        try:
            limiter.hit("socket")
            return True
        except RateLimited:
            self._strikes += 1
            if self._strikes >= self.settings.ws_max_violations:
                self.end(CloseCode.TOO_MANY_MESSAGES, "too many messages")
            else:
                self._error("rate_limited", "too many messages; slow down (this one was ignored)")
            return False

    async def _reauthenticate(self, token: str) -> None:
        """A fresh token for the same principal extends the socket past the old one's expiry."""
        try:
            fresh = await self._authenticate(token)
        except Refused as exc:
            self._error(exc.error.code, exc.error.message, field="token")
            return
        if not fresh.same_holder(self.identity):
            self._error(
                "principal_mismatch", "AUTH on an open socket must be for the same user or key", "token"
            )
            return
        self.identity = fresh
        self._arm_expiry()
        self._reply(authenticated(fresh))

    # --- the credential's holder changed -------------------------------------------------------------
    def user_changed(self, state: UserState) -> bool:
        """As the user's next HTTP request would see it: deactivated or signed out everywhere (tokens issued
        before `valid_after` stop counting) ends the socket. True when the socket is this user's and stays."""
        actor = self.identity.principal.actor
        if actor.user_id != state.user_id or actor.org_id != state.org_id:
            return False
        if not state.active:
            self.end(CloseCode.UNAUTHORIZED, "user deactivated")
            return False
        if self.identity.issued is None or self.identity.issued < state.valid_after:
            self.end(CloseCode.UNAUTHORIZED, "token revoked: sign in again")
            return False
        return True


def authenticated(identity: SocketIdentity) -> Authenticated:
    p = identity.principal
    return Authenticated(org_id=p.org_id, role=p.role, kind=p.kind, expires_at=identity.expires_at)


async def follow_credentials(nc: NatsClient, sockets: Iterable[AuthedSocket]) -> list[Subscription]:
    """Ends a revoked key's sockets at once, like its HTTP requests (the key cache hears the same notice), and
    tells the sockets of a changed user (auth broadcasts the user's state after the change commits).
    `sockets` is the live collection: it is read at every notice."""

    def revoked(notice: ApiKeyRevoked) -> None:
        for socket in list(sockets):
            if socket.key_id == notice.key_id:
                socket.end(CloseCode.UNAUTHORIZED, "API key revoked")

    def user_changed(notice: UserChanged) -> None:
        if notice.state is not None:
            for socket in list(sockets):
                socket.user_changed(notice.state)

    return [
        await notices.follow(nc, subjects.API_KEY_REVOKED, ApiKeyRevoked, revoked),
        await notices.follow(nc, subjects.USER_CHANGED, UserChanged, user_changed),
    ]
