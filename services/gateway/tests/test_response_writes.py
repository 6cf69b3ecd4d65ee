"""httpguard's `_Writes`: a response's head and the body sent right after it leave the gateway in one write,
on a real uvicorn server over real sockets, with every byte in order whatever the answer's shape (small,
streamed, HEAD, keep-alive, `Connection: close`), and for an audited change too (its head waits while the
audit entry's closing request is sent)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from browserfleet_gateway.app import create_app
from browserfleet_gateway.httpguard import HttpLimits, guarded
from nats.aio.client import Client as NatsClient

from .conftest import FakeServices, Signer, gateway_settings


class _Counted:
    """The socket's transport, counting the calls that write to it."""

    def __init__(self, transport: asyncio.Transport, writes: list[int]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(len(data))
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        chunks = list(chunks)
        self._writes.append(sum(len(c) for c in chunks))
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@contextlib.asynccontextmanager
async def _serving(app: Any, writes: list[int]) -> AsyncIterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    base = guarded(HttpLimits())

    class Counting(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(_Counted(transport, writes))

    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=Counting, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn.Server offers a flag, no event
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _exchange(port: int, request: bytes, answers: int = 1, *, until_closed: bool = False) -> bytes:
    """What the server answers `request` with: `answers` whole responses (by their Content-Length), or all
    it sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        if until_closed:
            return await asyncio.wait_for(reader.read(), 10)
        got = b""
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            got += head + await asyncio.wait_for(reader.readexactly(length), 10)
        return got
    finally:
        writer.close()


async def _shapes(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]})
        for part in (b"one", b"two", b"six"):
            await send({"type": "http.response.body", "body": part, "more_body": part != b"six"})
            await asyncio.sleep(0.01)
        return
    body = scope["path"].encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


async def test_head_and_body_leave_together_and_in_order() -> None:
    writes: list[int] = []
    async with _serving(_shapes, writes) as port:
        # keep-alive: two answers on one connection, one write each
        two = b"GET /a HTTP/1.1\r\nhost: t\r\n\r\nGET /bb HTTP/1.1\r\nhost: t\r\n\r\n"
        answer = await _exchange(port, two, 2)
        assert answer.count(b"HTTP/1.1 200 OK") == 2 and answer.endswith(b"/bb"), answer
        assert answer.index(b"\r\n\r\n/a") < answer.index(b"/bb")
        assert len(writes) == 2, writes
        # streamed: every part arrives, in order
        writes.clear()
        streamed = await _exchange(port, b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
        assert streamed.endswith(b"\r\n\r\nonetwosix"), streamed
        # HEAD: the head alone still leaves
        head = await _exchange(
            port, b"HEAD /x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n", until_closed=True
        )
        assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n"), head
        # Connection: close: the answer is whole before the connection closes
        closed = await _exchange(
            port, b"GET /c HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n", until_closed=True
        )
        assert closed.startswith(b"HTTP/1.1 200 OK") and closed.endswith(b"\r\n\r\n/c"), closed


async def test_an_audited_create_is_one_write(
    nats_url: str, gateway_nc: NatsClient, signer: Signer, services: FakeServices
) -> None:
    app = create_app(gateway_settings(nats_url), nc=gateway_nc)
    writes: list[int] = []
    token = signer.token(sub=f"u-{uuid.uuid4().hex[:8]}", org="org-a", role="user")
    body = b'{"goal": "g"}'
    request = (
        b"POST /api/v1/tasks HTTP/1.1\r\nhost: t\r\nauthorization: Bearer %s\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
    ) % (token.encode(), len(body), body)
    async with app.router.lifespan_context(app), _serving(app, writes) as port:
        audited = len(services.audited)
        answer = await _exchange(port, request, until_closed=True)
    assert answer.startswith(b"HTTP/1.1 201 Created"), answer
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert b'"goal":"g"' in payload and b"x-request-id" in head
    assert writes == [len(answer)], writes
    # the entry was opened, then closed with the answer's status
    assert [e["phase"] for e in services.audited[audited:]] == ["begin", "end"]
    assert services.audited[-1]["status"] == 201
