"""Who is on a WebSocket: `Authorization: Bearer` on the upgrade (programs), a single-use `?ticket=` (browsers),
or a first `{"type": "AUTH", "token": ...}` message within the auth timeout (browsers without tickets).

The socket is accepted first and refused with a close code and reason afterwards, because a browser sees
neither the status nor the body of a refused upgrade: 4401 for a missing, invalid or expired credential, 4403
for one that may not use this socket, 4408 when nothing came in time.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from browserfleet_contracts.auth import ISSUED_CLAIM
from browserfleet_contracts.eventstream import AuthMessage, CloseCode, ErrorMessage
from browserfleet_core.errors import ServiceError
from fastapi import WebSocket
from pydantic import ValidationError

from ..deps import AccessRule, Principal, admit, principal_for
from ..runtime import GatewayState
from .tickets import TicketStore


@dataclass(frozen=True)
class SocketIdentity:
    principal: Principal
    expires_at: datetime | None  # the credential's own expiry: the socket ends then
    # when a user's token was issued: a later `valid_after` (sign out everywhere, deactivation) ends the socket
    issued: float | None = None

    @property
    def key_id(self) -> str | None:
        return self.principal.actor.api_key_id

    def same_holder(self, other: SocketIdentity) -> bool:
        """Whether `other` is the same user or key: AUTH on an open socket may extend it, never swap it."""
        a, b = self.principal, other.principal
        return (a.org_id, a.user_id, a.actor.api_key_id) == (b.org_id, b.user_id, b.actor.api_key_id)


class Refused(Exception):
    def __init__(self, code: CloseCode, error: ErrorMessage) -> None:
        super().__init__(error.message)
        self.code = code
        self.error = error


def _refusal(exc: ServiceError) -> Refused:
    code = CloseCode.FORBIDDEN if exc.status == 403 else CloseCode.UNAUTHORIZED
    return Refused(code, ErrorMessage(code=exc.code, message=exc.message))


async def identify_token(state: GatewayState, rule: AccessRule, token: str, ip: str | None) -> SocketIdentity:
    """The identity behind an access token or API key, admitted by `rule`; raises Refused."""
    try:
        principal = admit(rule, await principal_for(state, token, ip))
        issued = principal.claims.get(ISSUED_CLAIM, principal.claims.get("iat"))
        return SocketIdentity(
            principal,
            await credential_expiry(state, principal, token),
            issued=float(issued) if isinstance(issued, int | float) else None,
        )
    except ServiceError as exc:
        # auth's refusals come back over NATS as a ServiceError carrying the status; anything else (auth
        # down, a timeout) is not the client's fault and goes up
        if exc.status not in (401, 403):
            raise
        raise _refusal(exc) from exc


async def credential_expiry(state: GatewayState, principal: Principal, token: str) -> datetime | None:
    """When the credential `token` (already verified as `principal`) stops working; None for a key without
    an expiry."""
    if principal.kind == "api_key":
        assert state.api_keys is not None and state.rpc is not None
        return (await state.api_keys.authenticate(state.rpc, token)).expires_at  # cached
    exp = principal.claims.get("exp")
    return datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None


async def identify_ticket(tickets: TicketStore, ticket: str) -> SocketIdentity:
    holder = await tickets.redeem(ticket)
    if holder is None:
        raise Refused(
            CloseCode.UNAUTHORIZED,
            ErrorMessage(code="invalid_ticket", message="unknown, used or expired ticket", field="ticket"),
        )
    return SocketIdentity(tickets.principal(holder), holder.credential_expires_at, issued=holder.issued)


async def identify(
    ws: WebSocket,
    state: GatewayState,
    tickets: TicketStore,
    rule: AccessRule,
    *,
    auth_timeout: float,
    max_message_bytes: int,
) -> SocketIdentity:
    """Authenticates an accepted socket the first way it offers (ticket, header, then AUTH message);
    raises Refused."""
    ip = ws.client.host if ws.client else None
    ticket = ws.query_params.get("ticket")
    if ticket is not None:
        return await identify_ticket(tickets, ticket)
    header = ws.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(
                CloseCode.UNAUTHORIZED,
                ErrorMessage(code="missing_token", message="Authorization must be `Bearer <token>`"),
            )
        return await identify_token(state, rule, token.strip(), ip)
    try:
        async with asyncio.timeout(auth_timeout):
            message = await ws.receive()
    except TimeoutError:
        raise Refused(
            CloseCode.TIMEOUT,
            ErrorMessage(code="auth_timeout", message=f"send AUTH within {auth_timeout:g} s"),
        ) from None
    if message["type"] == "websocket.disconnect":
        raise Refused(CloseCode.NORMAL, ErrorMessage(code="disconnected", message="client went away"))
    text = message.get("text")
    if isinstance(text, str) and len(text) > max_message_bytes:
        raise Refused(
            CloseCode.MESSAGE_TOO_BIG,
            ErrorMessage(code="message_too_big", message=f"messages are at most {max_message_bytes} bytes"),
        )
    try:
        auth = AuthMessage.model_validate(json.loads(text) if isinstance(text, str) else None)
    except (ValueError, ValidationError):
        raise Refused(
            CloseCode.UNAUTHORIZED,
            ErrorMessage(
                code="missing_token",
                message='authenticate first: {"type": "AUTH", "token": "<access token or API key>"}',
                field="token",
            ),
        ) from None
    return await identify_token(state, rule, auth.token, ip)
