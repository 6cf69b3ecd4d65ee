"""The organization's event stream over WebSocket (`/api/v1/events/ws`, `/ws`), and the single-use tickets
browsers open it with. The protocol is docs/websocket.md; the machinery is `browserfleet_gateway.eventstream`."""

from __future__ import annotations

from typing import Annotated

from browserfleet_contracts.auth import ISSUED_CLAIM
from browserfleet_contracts.eventstream import CloseCode, EventTicket
from browserfleet_core.errors import Unavailable
from fastapi import APIRouter, Depends, Request, WebSocket
from starlette.routing import WebSocketRoute

from ..deps import Principal, StateDep, access
from ..errors import API_ERRORS
from ..eventstream.auth import SocketIdentity, credential_expiry
from ..eventstream.service import EventStream
from ..runtime import GatewayState

router = APIRouter(tags=["events"], responses=API_ERRORS)

# a ticket changes nothing: it is a one-time stand-in for the caller's own credential, so every member (and
# any key that may read tasks) may have one, as they may open the stream itself
TicketHolder = Annotated[
    Principal,
    Depends(
        access(
            "viewer",
            scope="tasks:read",
            self_service=True,
            note="a single-use credential for the caller's own event-stream socket",
        )
    ),
]


def _stream(state: GatewayState) -> EventStream:
    if state.events is None:
        raise Unavailable("the event stream is starting", code="starting")
    return state.events


@router.post(
    "/api/v1/events/ticket",
    response_model=EventTicket,
    status_code=201,
    summary="A single-use ticket to open the event stream from a browser (`/api/v1/events/ws?ticket=…`)",
)
async def event_ticket(principal: TicketHolder, state: StateDep, request: Request) -> EventTicket:
    stream = _stream(state)
    # the ticket must end the socket when the credential behind it would have expired
    token = (request.headers.get("authorization") or "").partition(" ")[2].strip()
    expires_at = await credential_expiry(state, principal, token)
    issued = principal.claims.get(ISSUED_CLAIM, principal.claims.get("iat"))
    return await stream.ticket(
        SocketIdentity(
            principal, expires_at, issued=float(issued) if isinstance(issued, int | float) else None
        )
    )


async def _serve(websocket: WebSocket) -> None:
    state = getattr(websocket.app.state, "gateway", None)
    if not isinstance(state, GatewayState) or state.events is None:
        await websocket.accept()
        await websocket.close(CloseCode.TRY_AGAIN_LATER, "the gateway is starting")
        return
    await state.events.serve(websocket, state)


async def events_ws(websocket: WebSocket) -> None:
    """The organization's event stream (docs/websocket.md); `/ws` is the seed's short form."""
    await _serve(websocket)


# Plain Starlette routes, not FastAPI's: the socket takes no dependencies, and FastAPI's route keeps its
# dependency machinery (exit stacks, wrappers) alive for the socket's whole life, a few KiB per idle socket.
for _path, _name in (("/api/v1/events/ws", "events_ws"), ("/ws", "events_ws_short")):
    router.routes.append(WebSocketRoute(_path, events_ws, name=_name))
