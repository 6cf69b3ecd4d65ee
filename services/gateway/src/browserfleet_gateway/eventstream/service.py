"""`EventStream`: what the app holds for the event stream, and how one socket is served from upgrade to close."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from browserfleet_contracts.eventstream import CloseCode, ErrorMessage, EventTicket
from browserfleet_core.errors import ServiceError
from fastapi import WebSocket
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from prometheus_client import Gauge
from starlette.websockets import WebSocketDisconnect

from ..deps import AccessRule, Principal
from ..runtime import GatewayState
from ..settings import GatewaySettings
from .auth import Refused, SocketIdentity, identify, identify_token
from .hub import EventHub
from .session import Session, dump
from .socketbase import follow_credentials
from .tickets import TicketStore

log = logging.getLogger(__name__)

SOCKETS = Gauge("browserfleet_gateway_ws_connections", "authenticated event-stream sockets on this gateway")

# who may open the stream: every member of the organization, and API keys that may read tasks
RULE = AccessRule(min_role="viewer", scopes=("tasks:read",), note="the organization's event stream")


class EventStream:
    def __init__(self, nc: NatsClient, settings: GatewaySettings) -> None:
        self.settings = settings
        self.nc = nc
        self.hub = EventHub(nc, idle_seconds=settings.ws_hub_idle_seconds)
        self.tickets = TicketStore(nc, settings.ws_ticket_seconds)
        self.sessions: set[Session] = set()
        self._per_principal: dict[str, int] = {}
        self._open = 0  # accepted sockets, authenticated or not
        self._subs: list[Subscription] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.hub.start()
        self._sweeper = asyncio.create_task(self._sweep_idle(), name="event-stream-idle")
        self._subs = await follow_credentials(self.nc, self.sessions)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for session in list(self.sessions):
            session.end(CloseCode.GOING_AWAY, "the gateway is stopping; reconnect with since")
        for sub in self._subs:
            unsubscribe = getattr(sub, "unsubscribe", None)
            if unsubscribe is not None and not self.nc.is_closed:
                with contextlib.suppress(Exception):
                    await unsubscribe()
        await self.hub.stop()

    async def _sweep_idle(self) -> None:
        """Ends sockets that sent nothing for WS_IDLE_TIMEOUT_SECONDS (4408): one pass over all of them every
        quarter of that (at most every 5 s) costs less than a timer per socket."""
        idle = self.settings.ws_idle_timeout_seconds
        loop = asyncio.get_running_loop()
        reason = f"idle for {idle:g} s: send PING to keep the stream open"
        while True:
            await asyncio.sleep(min(5.0, idle / 4))
            cutoff = loop.time() - idle
            for session in list(self.sessions):
                if session.last_seen < cutoff:
                    session.end(CloseCode.TIMEOUT, reason)

    async def ticket(self, identity: SocketIdentity) -> EventTicket:
        ticket, holder = await self.tickets.issue(identity.principal, identity.expires_at, identity.issued)
        return EventTicket(
            ticket=ticket, expires_at=holder.ticket_expires_at, expires_in=self.settings.ws_ticket_seconds
        )

    async def serve(self, ws: WebSocket, state: GatewayState) -> None:
        """One socket, from the upgrade to its close. Sockets still authenticating count towards
        WS_MAX_CONNECTIONS too: otherwise sockets that never authenticate would be free."""
        await ws.accept()
        if self._open >= self.settings.ws_max_connections:
            await _refuse(ws, CloseCode.TRY_AGAIN_LATER, "gateway at its socket limit; try another or later")
            return
        self._open += 1
        try:
            await self._serve(ws, state)
        finally:
            self._open -= 1

    async def _serve(self, ws: WebSocket, state: GatewayState) -> None:
        try:
            identity = await identify(
                ws,
                state,
                self.tickets,
                RULE,
                auth_timeout=self.settings.ws_auth_timeout_seconds,
                max_message_bytes=self.settings.ws_max_message_bytes,
            )
        except Refused as exc:
            if exc.code != CloseCode.NORMAL:
                await _refuse(ws, exc.code, exc.error.message, exc.error)
            return
        except ServiceError as exc:  # auth or the JWKS could not answer: not the client's fault
            log.warning("event stream: cannot authenticate a socket now: %s", exc)
            await _refuse(ws, CloseCode.TRY_AGAIN_LATER, "authentication unavailable; retry")
            return
        who = _principal_key(identity.principal)
        limit = self.settings.ws_max_connections_per_principal
        if limit and self._per_principal.get(who, 0) >= limit:
            await _refuse(
                ws,
                CloseCode.TOO_MANY_MESSAGES,
                f"at most {limit} event-stream sockets per user or key",
                ErrorMessage(code="too_many_sockets", message=f"at most {limit} sockets per user or key"),
            )
            return

        async def reauthenticate(token: str) -> SocketIdentity:
            return await identify_token(state, RULE, token, ws.client.host if ws.client else None)

        assert state.nc is not None
        session = Session(
            ws,
            identity,
            hub=self.hub,
            js=state.nc.jetstream(),
            settings=self.settings,
            authenticate=reauthenticate,
        )
        self.sessions.add(session)
        self._per_principal[who] = self._per_principal.get(who, 0) + 1
        SOCKETS.inc()
        try:
            await session.run()
        finally:
            SOCKETS.dec()
            self.sessions.discard(session)
            left = self._per_principal.get(who, 1) - 1
            if left > 0:
                self._per_principal[who] = left
            else:
                self._per_principal.pop(who, None)


def _principal_key(principal: Principal) -> str:
    actor = principal.actor
    return f"key:{actor.api_key_id}" if actor.api_key_id else f"user:{actor.org_id}:{actor.user_id}"


async def _refuse(ws: WebSocket, code: int, reason: str, error: ErrorMessage | None = None) -> None:
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        if error is not None:
            await ws.send_text(dump(error))
        await ws.close(code, reason[:120])
