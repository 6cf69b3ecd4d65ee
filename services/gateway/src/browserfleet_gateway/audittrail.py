"""Every state-changing call is an audit entry in auth's log, named by the call's request id.

`access()` (deps) calls `begin` once the caller is admitted: the entry is written and committed in auth
*before* the route reaches the service that changes anything, so a change never exists without its entry (if
auth cannot take it, the call is refused with 503 and nothing changes). The principal then carries the request
id, so auth writes its own detail of a change (`user.role_changed`, ...) into the same entry. `AuditMiddleware`
asks auth to close the entry with the answer's status as the answer leaves, without holding the answer for
auth's reply (a round trip that was a third of a write call's latency): a reader may find the entry
`pending` for a moment after the answer, never missing. A caller refused at the door (403 for role, scope or
a missing second factor) is one complete entry written the same way. A gateway that dies mid-call leaves its
entry `pending`: visible, never missing.

The entry holds who (user or API key, org, client address), what (`api.<operation>`, `METHOD /template`,
the path's ids, the id the answer created), the time and the outcome: never a request body (no credential or
secret value reaches the log).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Final, Literal

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import RequestAudit
from browserfleet_contracts.common import Actor
from browserfleet_core.errors import Unavailable
from browserfleet_core.messaging import RpcClient
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .deps import Principal

log = logging.getLogger(__name__)

STATE_CHANGING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REQUEST_ID_KEY: Final = "browserfleet.request_id"
_CALL_KEY: Final = "browserfleet.audit"
# an answer's body is read for the id it created only up to this size (create answers are small)
_ID_SCAN_BYTES: Final = 65_536


@dataclasses.dataclass
class _Call:
    rpc: RpcClient
    principal: Principal
    begun: bool = False


def request_id(scope: Scope) -> str:
    """The call's id: made by the gateway (never taken from the client, whose id could name another call's
    entry), answered as `X-Request-ID`."""
    rid = scope.get(REQUEST_ID_KEY)
    if not isinstance(rid, str):
        rid = _uuid4_hex()
        scope[REQUEST_ID_KEY] = rid
    return rid


_RANDOM = bytearray()  # random bytes drawn ahead, this process's own (see _uuid4_hex)
_RANDOM_PID = [0]


def _uuid4_hex() -> str:
    """`uuid.uuid4().hex`, same randomness (os.urandom) and format (a version-4 RFC 4122 UUID), from bytes
    drawn 4 KiB at a time: uuid4 is a getrandom system call and an integer round trip per call, ~3 % of the
    gateway's CPU per read. A forked child draws its own (it never hands out its parent's next ids)."""
    if len(_RANDOM) < 16 or _RANDOM_PID[0] != os.getpid():
        _RANDOM[:] = os.urandom(4096)
        _RANDOM_PID[0] = os.getpid()
    raw = _RANDOM[-16:]
    del _RANDOM[-16:]
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return raw.hex()


def _action(scope: Scope) -> tuple[str, str]:
    route: Any = scope.get("route")
    name = getattr(route, "name", None) or "unmatched"
    template = getattr(route, "path", None) or "unmatched"
    return f"api.{name}"[:64], f"{scope.get('method', '?')} {template}"[:200]


def _path(scope: Scope) -> dict[str, str]:
    params = scope.get("path_params") or {}
    return {str(k)[:64]: str(v)[:320] for k, v in list(params.items())[:8]}


def _entry(
    scope: Scope,
    actor: Actor,
    phase: Literal["begin", "end"],
    *,
    created: str | None = None,
    status: int | None = None,
    code: str | None = None,
) -> RequestAudit:
    """The call's entry as auth records it: what was called and on which ids; the target is the id the
    answer created, else the path's last id."""
    action, route = _action(scope)
    path = _path(scope)
    target = created or next(reversed(path.values()), None)
    return RequestAudit(
        actor=actor,
        phase=phase,
        action=action,
        route=route,
        path=path,
        target=target,
        status=status,
        code=code,
    )


def note(conn: HTTPConnection, rpc: RpcClient | None, principal: Principal) -> None:
    """Who is calling, before admission decides: a refusal is recorded as theirs."""
    if rpc is not None and conn.scope.get("method") in STATE_CHANGING:
        conn.scope[_CALL_KEY] = _Call(rpc, principal)


async def begin(conn: HTTPConnection, rpc: RpcClient | None, admitted: Principal) -> Principal:
    """Open the call's entry (committed in auth) and return the principal naming it; reads pass through."""
    scope = conn.scope
    if rpc is None or scope.get("method") not in STATE_CHANGING:
        return admitted
    actor = admitted.actor.model_copy(update={"request_id": request_id(scope)})
    admitted = dataclasses.replace(admitted, actor=actor)
    call = _Call(rpc, admitted)
    scope[_CALL_KEY] = call
    try:
        await rpc.call(endpoints.Auth.RECORD_REQUEST, _entry(scope, actor, "begin"))
    except Exception as exc:
        log.warning("audit entry of %s not written (%s): call refused", _action(scope)[1], exc)
        raise Unavailable(
            "the audit log cannot record this change right now; nothing was changed, retry later",
            code="audit_unavailable",
        ) from exc
    call.begun = True
    return admitted


async def _end(scope: Scope, call: _Call, status: int, body: bytes) -> None:
    code: str | None = None
    created: str | None = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            error = parsed.get("error")
            if isinstance(error, dict) and isinstance(error.get("code"), str):
                code = error["code"][:64]
            elif status < 300 and isinstance(parsed.get("id"), str):
                created = parsed["id"][:320]
    if not call.begun and status not in (401, 403):
        return  # a 429 (the limiter, not a permission) or a malformed request: not a decision on this caller
    actor = call.principal.actor.model_copy(update={"request_id": request_id(scope)})
    try:
        entry = _entry(scope, actor, "end", created=created, status=status, code=code)
        await call.rpc.call(endpoints.Auth.RECORD_REQUEST, entry)
    except Exception as exc:  # the change is done and its entry open: it stays `pending`, never missing
        log.warning("audit entry %s not closed (%s)", request_id(scope), exc)


class AuditMiddleware:
    """Names every HTTP call (`X-Request-ID`) and closes the audit entry of a state-changing one with its
    answer: the closing request leaves before the answer's last byte, and the call ends once auth has it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope).encode()
        status = 0
        held: list[bytes] = []
        held_size = 0

        closing: asyncio.Task[None] | None = None
        # an audited answer's head waits for its body, so that the two still leave together (one write,
        # `httpguard`) although the closing request is sent between them
        head: Message | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, held_size, closing, head
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [*message.get("headers", []), (b"x-request-id", rid)]
                message = {**message, "headers": headers}
                if isinstance(scope.get(_CALL_KEY), _Call):
                    head = message
                    return
            elif message["type"] == "http.response.body":
                call = scope.get(_CALL_KEY)
                if isinstance(call, _Call):
                    chunk: bytes = message.get("body", b"")
                    if held_size + len(chunk) <= _ID_SCAN_BYTES:
                        held.append(chunk)
                        held_size += len(chunk)
                    if not message.get("more_body", False):
                        scope.pop(_CALL_KEY, None)
                        body = b"".join(held) if held_size < _ID_SCAN_BYTES else b""
                        closing = asyncio.create_task(_end(scope, call, status, body))
                        await asyncio.sleep(0)  # the closing request leaves before the answer's last byte
                if head is not None:
                    await send(head)
                    head = None
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
            if head is not None:  # a head whose body never came goes out as it would have
                await send(head)
        finally:
            if closing is not None:  # also when the client left before the last byte: the entry still closes
                await closing
