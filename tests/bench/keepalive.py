"""A lean HTTP/1.1 keep-alive client for the benchmarks' submitters.

Why not httpx: measured on the benchmark machine, an httpx.AsyncClient spent ≈ 7 ms of CPU per POST, so at
a few dozen submits a second the load generator took more of the 2 cores than the gateway it was measuring
(the same trap `wrk` avoids for the read benchmark). This client writes the request bytes itself and reads
one `Content-Length` response per request on a pool of persistent connections: a fraction of a millisecond
per request. It speaks only what the gateway answers to a JSON POST/GET (no chunked bodies, no redirects,
no TLS) and is not meant for anything else.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

IDLE_SECONDS = 2.0


class HTTPError(Exception):
    pass


class KeepAliveClient:
    def __init__(self, base_url: str, *, token: str, connections: int, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http://host:port URLs are supported, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self._head = f"Host: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(connections)
        self._open: list[asyncio.StreamWriter] = []

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\n{self._head}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode() + (body or b"")
        async with self._slots:
            conn = await self._checkout()
            try:
                # a deadline on this task rather than wait_for, which (Python 3.11) runs the exchange as a task
                # of its own: one more task and loop turn per request, ~0.1 ms of a call timed one at a time
                async with asyncio.timeout(self.timeout):
                    status, payload, keep = await self._exchange(conn, data)
            except BaseException:
                conn[1].close()
                raise
            if keep:
                self._idle.put_nowait((conn[0], conn[1], time.monotonic()))
            else:
                conn[1].close()
            return status, payload

    async def _checkout(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # the server closes a connection idle for a few seconds (uvicorn: 5 s); one idle longer than
        # IDLE_SECONDS is dropped rather than risk a request on a connection being closed under it
        while not self._idle.empty():
            reader, writer, since = self._idle.get_nowait()
            if time.monotonic() - since < IDLE_SECONDS and not reader.at_eof():
                return reader, writer
            writer.close()
        return await self._connect()

    async def post_json(self, path: str, body: Any) -> tuple[int, Any]:
        status, payload = await self.request("POST", path, json.dumps(body).encode())
        return status, json.loads(payload) if payload else None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._open.append(writer)
        return reader, writer

    @staticmethod
    async def _exchange(
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], data: bytes
    ) -> tuple[int, bytes, bool]:
        reader, writer = conn
        writer.write(data)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, keep = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
            elif name == "transfer-encoding":
                raise HTTPError(f"unsupported transfer-encoding: {value.strip()}")
        payload = await reader.readexactly(length) if length else b""
        return status, payload, keep

    async def close(self) -> None:
        for writer in self._open:
            writer.close()
        self._open.clear()
