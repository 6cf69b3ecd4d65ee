"""Hostile HTTP at the connection: uvicorn's httptools protocol with limits it does not have.

uvicorn (with httptools) buffers a request's head for as long and as large as the client likes: 200
unfinished 1 MiB headers held ~200 MiB for as long as the sender wished. Here, per connection:

- the head (request line and headers) is at most `max_header_bytes` and `max_headers` lines: 431;
- the head must arrive within `header_timeout_seconds` of the request's first byte (or of the connection's
  opening): 408, so an idle or dripping connection costs a timer, not a slot for ever;
- the body must arrive within `body_timeout_seconds` of the head: 408 (if no answer has started; else the
  connection is closed);
- one client address holds at most `max_connections_per_client` open connections: 429 for the next (a trusted
  proxy's address is not capped: it carries every client behind the load balancer).

Each refusal is a short plain answer with `Connection: close`; the connection is then closed. A WebSocket
leaves this protocol at its upgrade (its own limits: frame size, idle and auth timeouts, connection caps).
The request-shape limits an application can judge (body size, query parameters, JSON depth) are
`middleware.BodyLimitMiddleware`'s.

uvicorn writes a response's head and its body with a write each, two system calls (on loopback the
receiver's side of each is charged to this process too) for what is one small answer. `_Writes` keeps each
write until the next one or the end of the event loop's turn, so a head and the body sent right after it
leave in one `writelines`; nothing is reordered, and a close sends what is kept first.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASONS = {408: b"Request Timeout", 413: b"Content Too Large", 429: b"Too Many Requests"}
_REASONS[431] = b"Request Header Fields Too Large"


class HttpLimits(BaseModel):
    """HTTP_LIMITS (JSON) overrides any of these, e.g. `{"header_timeout_seconds": 5}`."""

    max_header_bytes: int = Field(default=32_768, ge=1_024, description="request line + headers: 431 past it")
    max_headers: int = Field(default=100, ge=8, description="header lines: 431 past it")
    header_timeout_seconds: float = Field(default=10.0, gt=0, description="to receive a request's head: 408")
    body_timeout_seconds: float = Field(
        default=60.0, gt=0, description="to receive a body after its head: 408"
    )
    max_connections_per_client: int = Field(
        default=256, ge=0, description="open connections per peer address (0: no cap): 429 past it"
    )
    max_query_params: int = Field(default=100, ge=1, description="query parameters: 400 past it")
    max_json_depth: int = Field(default=64, ge=2, description="nesting of a JSON body: 400 past it")


class _Refused(Exception):
    pass


def _answer(status: int, code: str, message: str) -> bytes:
    body = json.dumps(
        {"error": {"status": status, "code": code, "message": message, "field": None, "detail": None}}
    ).encode()
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, _REASONS[status], len(body))
    )
    return head + body


class _Writes:
    """The connection's transport as the protocol and its request cycles write to it: a write is kept until
    the next (both then leave in one call) or until the end of this turn of the loop, whichever is first."""

    __slots__ = ("_flush_soon", "_kept", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._kept: bytes | None = None
        self._flush_soon: asyncio.Handle | None = None

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    def write(self, data: bytes) -> None:
        kept = self._kept
        if kept is None:
            self._kept = data
            self._flush_soon = self._loop.call_soon(self.flush)
            return
        self._kept = None
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        self._transport.writelines((kept, data))

    def flush(self) -> None:
        kept, self._kept = self._kept, None
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if kept is not None and not self._transport.is_closing():
            self._transport.write(kept)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    """`guarded(limits)` makes the class uvicorn instantiates per connection."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    open_per_client: ClassVar[Counter[str]] = Counter()
    # trusted proxies (TRUSTED_PROXIES) carry many clients' connections: capping their address would cap
    # every client behind the load balancer together, so they are not counted
    uncapped: ClassVar[tuple[IPv4Network | IPv6Network, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_lines = 0
        self._in_head = True
        self._refused = False
        self._counted: str | None = None

    # --- connection ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._writes = _Writes(transport, self.loop)
        self.transport = self._writes  # type: ignore[assignment]
        peer = self.client[0] if self.client else "?"
        cap = 0 if _within(peer, self.uncapped) else self.limits.max_connections_per_client
        if cap and self.open_per_client[peer] >= cap:
            self._refuse(429, "too_many_connections", f"more than {cap} open connections from this address")
            return
        self.open_per_client[peer] += 1
        self._counted = peer
        self._arm(self.limits.header_timeout_seconds, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._release()  # the socket leaves this protocol; the WebSocket endpoints have their own caps
        self._writes.flush()
        self.transport = self._writes.transport  # the WebSocket's protocol writes its frames itself
        super().handle_websocket_upgrade()

    def _release(self) -> None:
        self._disarm()
        if self._counted is not None:
            self.open_per_client[self._counted] -= 1
            if self.open_per_client[self._counted] <= 0:
                del self.open_per_client[self._counted]
            self._counted = None

    # --- timers ----------------------------------------------------------------------------------------
    def _arm(self, seconds: float, handler: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._in_head and not self.transport.is_closing():
            seconds = self.limits.header_timeout_seconds
            self._refuse(408, "header_timeout", f"the request's headers did not arrive within {seconds:g} s")

    def _body_timed_out(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        if cycle.response_started:
            self.transport.close()
            return
        cycle.disconnected = True  # what the application reads next is a disconnect; its answer goes nowhere
        seconds = self.limits.body_timeout_seconds
        self._refuse(408, "body_timeout", f"the request's body did not arrive within {seconds:g} s")

    # --- parsing ---------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(
            data
        )  # a callback's _Refused comes back as a parser error: see send_400_response
        if self._refused:
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse_head_size()

    def send_400_response(self, msg: str) -> None:
        if self._refused:  # a callback refused the request: its own answer is already written
            return
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_lines = 0
        self._arm(self.limits.header_timeout_seconds, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_header_bytes:
            self._refuse_head_size()
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_lines += 1
        if self._head_lines > self.limits.max_headers:
            self._refuse(431, "too_many_headers", f"more than {self.limits.max_headers} request headers")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body and not self.parser.should_upgrade():
            self._arm(self.limits.body_timeout_seconds, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _refuse_head_size(self) -> None:
        limit = self.limits.max_header_bytes
        self._refuse(431, "header_too_large", f"the request line and headers exceed {limit} bytes")

    def _refuse(self, status: int, code: str, message: str) -> None:
        if self._refused:
            return
        self._refused = True
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_answer(status, code, message))
            self.transport.close()


def guarded(
    limits: HttpLimits, uncapped: Sequence[IPv4Network | IPv6Network] = ()
) -> type[GuardedHttpProtocol]:
    """A protocol class bound to `limits`, with its own per-address count (one per server); connections from
    `uncapped` (the trusted proxies) are not counted against the per-address cap."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"limits": limits, "open_per_client": Counter(), "uncapped": tuple(uncapped)},
    )


def _within(peer: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    if not networks:
        return False
    try:
        address = ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks)
