"""The per-address connection cap of httpguard, on a real uvicorn server over real sockets: it holds for a
client's own address and not for a trusted proxy's, which carries every client behind the load balancer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from ipaddress import ip_network
from typing import Any

import uvicorn
from browserfleet_gateway.httpguard import HttpLimits, guarded

CAP = 2


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def serving(uncapped: list[str]) -> AsyncIterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    limits = HttpLimits(max_connections_per_client=CAP)
    config = uvicorn.Config(
        _app,
        host="127.0.0.1",
        port=port,
        http=guarded(limits, [ip_network(n) for n in uncapped]),
        lifespan="off",
        log_config=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn.Server offers a flag, no event
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _statuses(port: int, connections: int) -> list[int]:
    """Opens `connections` at once from 127.0.0.1, then sends a request on each: the HTTP status each gets."""
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    statuses = []
    try:
        for reader, writer in opened:
            writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
            statuses.append(int(line.split()[1]))
    finally:
        for _, writer in opened:
            writer.close()
    return statuses


async def test_a_client_address_is_capped() -> None:
    async with serving(uncapped=[]) as port:
        statuses = await _statuses(port, CAP + 2)
    assert statuses[:CAP] == [200] * CAP and statuses[CAP:] == [429, 429], statuses


async def test_a_trusted_proxys_address_is_not() -> None:
    async with serving(uncapped=["127.0.0.1/32"]) as port:
        statuses = await _statuses(port, CAP + 2)
    assert statuses == [200] * (CAP + 2), statuses
