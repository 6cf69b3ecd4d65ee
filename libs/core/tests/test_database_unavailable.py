"""A service whose database cannot be reached answers its rpc callers 503 `database_unavailable` (naming the
database, with how long to wait), not 500 "internal error": through `rpc_router()` and `LeanResponder` alike,
on the real NATS and the real (embedded) PostgreSQL reached through `PgDoor`, a TCP relay the test opens
and closes. Once the database is back, the same endpoint answers again."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from browserfleet_contracts.endpoints import Endpoint
from browserfleet_core.db import Database
from browserfleet_core.errors import ServiceError, database_unavailable
from browserfleet_core.lean import LeanResponder
from browserfleet_core.messaging import RpcClient, make_broker, rpc_error_body, rpc_router
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError


class PgDoor:
    """A TCP relay in front of the test's PostgreSQL: `close()` refuses new connections and cuts the open
    ones (as a stopped server does), `open()` lets them through again."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        self._parts = parts
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.server: asyncio.Server | None = None
        self.port = 0
        self._pipes: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        p = self._parts
        netloc = p.netloc.rsplit("@", 1)[0] + "@" if "@" in p.netloc else ""
        return urlunsplit((p.scheme, f"{netloc}127.0.0.1:{self.port}", p.path, p.query, p.fragment))

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self._pipes):
            w.close()
        self._pipes.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._pipes.update({writer, up_writer})

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


@pytest.fixture
async def door(database_url: str) -> AsyncIterator[PgDoor]:
    d = PgDoor(database_url)
    await d.open()
    try:
        yield d
    finally:
        await d.close()


class Ask(BaseModel):
    n: int = 1


class Answer(BaseModel):
    value: int


def handler_on(db: Database) -> Callable[[Ask], Awaitable[Answer]]:
    async def select(body: Ask) -> Answer:
        async with db.transaction() as s:
            return Answer(
                value=int(
                    (await (await s.connection()).execute(text("SELECT :n"), {"n": body.n})).scalar_one()
                )
            )

    return select


async def served_lean(nc: NatsClient, endpoint: Endpoint[Ask, Answer], db: Database) -> AsyncIterator[None]:
    responder = LeanResponder(nc, endpoint, handler_on(db), app_name="dbdown")
    await responder.start()
    try:
        yield
    finally:
        await responder.stop()


async def served_router(nats_url: str, endpoint: Endpoint[Ask, Answer], db: Database) -> AsyncIterator[None]:
    broker = make_broker(nats_url, name="dbdown")
    router = rpc_router()
    router.handle(endpoint)(handler_on(db))
    broker.include_router(router)
    await broker.start()
    await broker.connection.flush()  # the server has its SUBs before the test asks (else: no responders)
    try:
        yield
    finally:
        await broker.stop()


@pytest.mark.parametrize("way", ["lean", "router"])
async def test_a_database_that_is_down_is_a_503_then_it_recovers(
    way: str, nats_url: str, nc: NatsClient, door: PgDoor
) -> None:
    endpoint = Endpoint("dbdown", f"svc.dbdown{secrets.token_hex(3)}.select", Ask, Answer)
    db = Database(door.url, "public", pool_size=1)
    serving: Any = served_lean(nc, endpoint, db) if way == "lean" else served_router(nats_url, endpoint, db)
    rpc = RpcClient(nc, timeout=20)
    try:
        await anext(serving)
        assert (await rpc.call(endpoint, Ask(n=7))).value == 7  # a pooled connection now exists

        await door.close()  # the open connection is cut and new ones are refused
        for _ in range(2):  # the pooled connection that died, then a fresh one that is refused
            with pytest.raises(ServiceError) as caught:
                await rpc.call(endpoint, Ask(n=8))
            err = caught.value
            assert (err.status, err.code) == (503, "database_unavailable"), err.body()
            assert err.detail == [{"dependency": "database", "retry_after": 2}]

        await door.open()
        assert (await rpc.call(endpoint, Ask(n=9))).value == 9
    finally:
        await serving.aclose()
        await db.dispose()


async def test_only_a_connection_problem_is_a_503(database_url: str) -> None:
    """A query the server rejects stays a 500 (a bug, logged); a refused connection is a 503."""
    db = Database(database_url, "public", pool_size=1)
    try:
        with pytest.raises(ProgrammingError) as caught:
            async with db.transaction() as s:
                await (await s.connection()).execute(text("SELECT no_such_column FROM no_such_table"))
        assert database_unavailable(caught.value) is None
        assert rpc_error_body(caught.value).status == 500
    finally:
        await db.dispose()
    closed = Database("postgresql://u:p@127.0.0.1:9/none", "public", pool_size=1)  # port 9: nobody listens
    try:
        with pytest.raises(OperationalError) as refused:
            async with closed.transaction() as s:
                await (await s.connection()).execute(text("SELECT 1"))
        assert isinstance(refused.value.orig, psycopg.OperationalError)
        assert rpc_error_body(refused.value).status == 503
    finally:
        await closed.dispose()
