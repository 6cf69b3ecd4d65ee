"""A lean WebSocket client for the event-stream benchmark: thousands of sockets in one process.

Why not the `websockets` library: with a task, a queue and a keepalive per connection, a thousand of its
clients in the benchmark process spent more of the 2 cores receiving a fan-out than the gateway spent sending
it, so the delay measured was the client's (the trap `keepalive.py` avoids for HTTP). This is an asyncio
Protocol that reads frames in `data_received` and timestamps each text message as it arrives. It speaks what
the gateway's event stream needs: the upgrade with an `Authorization` header, masked text frames out, text
frames in (permessage-deflate when offered and accepted, as browsers negotiate it), pings answered, close.
It is not meant for anything else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def _frame(opcode: int, payload: bytes) -> bytes:
    """A client frame: FIN, masked (RFC 6455 requires clients to mask)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65_536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return head + mask + masked


class Client(asyncio.Protocol):
    """One socket. `messages` holds (arrival time, text) of every text message, in order."""

    def __init__(self, host: str, path: str, token: str, *, deflate: bool) -> None:
        self.host, self.path, self.token, self.offer_deflate = host, path, token, deflate
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.inflater: Any = None
        self.messages: list[tuple[float, bytes]] = []
        self.waiters: list[tuple[Callable[[bytes], bool], asyncio.Future[bytes]]] = []
        self.close_code: int | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        ext = (
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            if self.offer_deflate
            else ""
        )
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}"
                f"Authorization: Bearer {self.token}\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            if " 101 " not in head.split("\r\n", 1)[0]:
                self.upgraded.set_exception(ConnectionError(head.split("\r\n", 1)[0]))
                return
            if "permessage-deflate" in head.lower():
                self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            self.upgraded.set_result(None)
        self._frames(now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    # --- frames ------------------------------------------------------------------------------------
    def _frames(self, now: float) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, at = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, at = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, at = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < at + n:
                return
            payload = bytes(buf[at : at + n])
            del buf[: at + n]
            opcode = b0 & 0x0F
            if opcode == TEXT:
                if b0 & 0x40 and self.inflater is not None:  # RSV1: compressed
                    payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
                self._message(now, payload)
            elif opcode == PING and self.transport is not None:
                self.transport.write(_frame(PONG, payload))
            elif opcode == CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                if self.transport is not None:
                    self.transport.write(_frame(CLOSE, payload[:2]))
                    self.transport.close()

    def _message(self, now: float, payload: bytes) -> None:
        self.messages.append((now, payload))
        for want, fut in list(self.waiters):
            if not fut.done() and want(payload):
                fut.set_result(payload)
                self.waiters.remove((want, fut))

    # --- use -----------------------------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(_frame(TEXT, json.dumps(message).encode()))

    async def wait_for(self, message_type: str, timeout: float = 60.0) -> dict[str, Any]:
        needle = f'"type":"{message_type}"'.encode()
        for _, payload in self.messages:
            if needle in payload:
                return dict(json.loads(payload))
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiters.append((lambda p: needle in p, fut))
        return dict(json.loads(await asyncio.wait_for(fut, timeout)))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(CLOSE, struct.pack("!H", 1000)))
            self.transport.close()


async def open_client(url: str, token: str, *, deflate: bool, path: str = "/api/v1/events/ws") -> Client:
    """A connected, upgraded, authenticated client (AUTHENTICATED received)."""
    host, _, port = url.removeprefix("http://").removeprefix("ws://").partition(":")
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: Client(f"{host}:{port}", path, token, deflate=deflate), host, int(port or 80)
    )
    await asyncio.wait_for(client.upgraded, 60)
    await client.wait_for("AUTHENTICATED")
    return client
