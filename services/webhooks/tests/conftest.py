"""Fixtures: the webhooks service running against the run's real NATS and PostgreSQL (restartable, and
restartable with other settings), an RPC client, and a webhook receiver standing in for a customer's system."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from browserfleet_contracts import subjects
from browserfleet_core.messaging import RpcClient
from browserfleet_core.migrations import upgrade
from browserfleet_webhooks.app import WebhooksService
from browserfleet_webhooks.handlers import EVENTS_DURABLE
from browserfleet_webhooks.settings import WebhooksSettings
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

MASTER_KEY = base64.b64encode(os.urandom(32)).decode()
# Svix's schedule compressed (same shape, 8 attempts, a few seconds in all): tests never wait hours
TEST_SCHEDULE = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.4]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Receiver:
    """Stands in for a customer's system receiving webhooks (a third party): a minimal HTTP/1.1 server
    on 127.0.0.1 that records every request and answers with scripted replies per path. `down()` closes its
    socket (connections are refused, as when the customer's system is down) and `up()` opens it again on the
    same port."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    script: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    server: asyncio.Server | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *statuses: int, headers: dict[str, str] | None = None) -> None:
        """The next requests on `path` get these statuses in order (with `headers`); after that, 200."""
        self.script[path].extend(Reply(s, dict(headers or {})) for s in statuses)

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 30.0) -> list[Received]:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.on(path)) >= count), timeout)
        return self.on(path)

    async def up(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.server = None

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
            reply = queue.popleft() if queue else Reply(200)
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            answer = f"HTTP/1.1 {reply.status} X\r\n{extra}content-length: 2\r\nconnection: close\r\n\r\nok"
            writer.write(answer.encode())
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
    await r.up()
    try:
        yield r
    finally:
        if r.server is not None:
            await r.down()


@pytest.fixture(scope="session")
def settings(nats_url: str, database_url: str) -> WebhooksSettings:
    upgrade("browserfleet_webhooks", database_url)
    return WebhooksSettings(
        nats_url=nats_url,
        database_url=database_url,
        webhook_master_key=MASTER_KEY,
        webhook_allow_private_targets=True,  # the receiver is on loopback
        webhook_retry_schedule=TEST_SCHEDULE,
        webhook_circuit_failures=3,
        webhook_circuit_cooldown_seconds=0.2,
        webhook_poll_seconds=0.05,
        webhook_timeout_seconds=5,
        outbox_poll_seconds=0.05,
    )


class Running:
    """The service under test. `restart()` stops it and starts a new process-like instance (nothing kept in
    memory survives), optionally with other settings; `configured(**overrides)` runs a block with them."""

    def __init__(self, settings: WebhooksSettings) -> None:
        self.base = settings
        self.settings = settings
        self.svc: WebhooksService | None = None

    async def start(self, **overrides: Any) -> WebhooksService:
        self.settings = self.base.model_copy(update=overrides)
        self.svc = WebhooksService(self.settings)
        await self.svc.start()
        return self.svc

    async def stop(self) -> None:
        if self.svc is not None:
            await self.svc.stop()
            self.svc = None

    async def __aenter__(self) -> Running:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def restart(self, **overrides: Any) -> WebhooksService:
        await self.stop()
        return await self.start(**overrides)

    @contextlib.asynccontextmanager
    async def configured(self, **overrides: Any) -> AsyncIterator[WebhooksService]:
        try:
            yield await self.restart(**overrides)
        finally:
            await self.restart()


@pytest.fixture(scope="session")
async def running(settings: WebhooksSettings) -> AsyncIterator[Running]:
    async with Running(settings) as r:
        yield r


@pytest.fixture
def service(running: Running) -> WebhooksService:
    assert running.svc is not None
    return running.svc


@pytest.fixture(scope="session")
def rpc(nc: NatsClient, running: Running) -> RpcClient:
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
