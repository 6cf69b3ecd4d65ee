"""Fixtures: the webhooks service running against the run's real NATS and PostgreSQL, an RPC client,
and a webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats
import pytest
from browserfleet_contracts import subjects
from browserfleet_core.messaging import RpcClient
from browserfleet_core.migrations import upgrade
from browserfleet_webhooks.app import WebhooksService
from browserfleet_webhooks.handlers import EVENTS_DURABLE
from browserfleet_webhooks.settings import WebhooksSettings
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Stands in for a customer's system receiving webhooks (a third party): a minimal HTTP/1.1 server
    on 127.0.0.1 that records every request and answers with scripted status codes per path."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    script: dict[str, deque[int]] = field(default_factory=lambda: defaultdict(deque))
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *statuses: int) -> None:
        """The next requests on `path` get these statuses in order; after that, 200."""
        self.script[path].extend(statuses)

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 15.0) -> list[Received]:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.on(path)) >= count), timeout)
        return self.on(path)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _method, path, _version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            queue = self.script[path]
            status = queue.popleft() if queue else 200
            writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".encode())
            await writer.drain()
            async with self.arrived:
                self.requests.append(Received(path, headers, body))
                self.arrived.notify_all()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@pytest.fixture(scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.port = server.sockets[0].getsockname()[1]
    async with server:
        yield r


@pytest.fixture(scope="session")
def settings(nats_url: str, database_url: str) -> WebhooksSettings:
    upgrade("browserfleet_webhooks", database_url)
    return WebhooksSettings(
        nats_url=nats_url,
        database_url=database_url,
        webhook_allow_private_targets=True,  # the receiver is on loopback
        webhook_backoff_base_seconds=0.02,
        webhook_max_attempts=3,
        webhook_poll_seconds=0.05,
        webhook_timeout_seconds=5,
    )


@pytest.fixture(scope="session")
async def service(settings: WebhooksSettings) -> AsyncIterator[WebhooksService]:
    svc = WebhooksService(settings)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


@pytest.fixture(scope="session")
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.drain()


@pytest.fixture(scope="session")
def js(nc: NatsClient) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture(scope="session")
def rpc(nc: NatsClient, service: WebhooksService) -> RpcClient:
    return RpcClient(nc, timeout=10)


async def events_drained(js: JetStreamContext, timeout: float = 15.0) -> None:
    """Wait until the webhooks consumer has acknowledged every event in the stream (so each one has
    been recorded, or found to need nothing)."""

    async def poll() -> None:
        while True:
            info = await js.consumer_info(subjects.EVENTS_STREAM, EVENTS_DURABLE)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)
