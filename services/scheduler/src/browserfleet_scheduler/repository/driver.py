"""Fixed statements run on the driver's connection: compiled once, prepared by psycopg, no SQLAlchemy work per
execution (on the hot paths that work cost more CPU than the statement itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import psycopg
from browserfleet_core.db import Database
from psycopg.rows import namedtuple_row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ClauseElement

ItemT = TypeVar("ItemT")
AnswerT = TypeVar("AnswerT")


class Fixed:
    """A constant statement (a `text()` with `:name` parameters, or any construct) compiled once per dialect.

    Values go to the driver as they are: a statement run this way takes parameters no SQLAlchemy type would
    process (JSON as text cast in the SQL, arrays, bytes, datetimes), and its JSONB results are the driver's
    (as SQLAlchemy would have passed them on). A list goes as an array in PostgreSQL's binary format: in the
    text format psycopg quotes and escapes every element with a regular expression, ~9.5 µs for each JSON
    payload or id of a batch (11 % of the scheduler's samples in a burst), against ~0.2 µs binary."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._sql: dict[tuple[str, frozenset[str]], str] = {}

    def sql(self, conn: AsyncConnection, binary: frozenset[str] = frozenset()) -> str:
        """The statement for `conn`'s dialect; the parameters named in `binary` sent in the binary format."""
        key = (conn.dialect.name, binary)
        found = self._sql.get(key)
        if found is None:
            found = str(self.statement.compile(dialect=conn.dialect))
            for name in binary:
                found = found.replace(f"%({name})s", f"%({name})b")
            self._sql[key] = found
        return found

    async def rows(self, conn: AsyncConnection, params: Mapping[str, Any]) -> list[Any]:
        """Every row, as named tuples (attribute access, as SQLAlchemy's rows). On an autocommit connection
        (`Database.statement()`) the statement commits by itself. A connection that died under it is
        invalidated: SQLAlchemy did not see it fail, and its pool must not hand it out again."""
        sql = self.sql(conn, frozenset(k for k, v in params.items() if type(v) is list))
        driver = (await conn.get_raw_connection()).driver_connection
        assert isinstance(driver, psycopg.AsyncConnection)
        try:
            async with driver.cursor(row_factory=namedtuple_row) as cursor:
                await cursor.execute(sql, params, prepare=True)
                return await cursor.fetchall()
        except psycopg.Error:
            if driver.broken or driver.closed:
                await conn.invalidate()
            raise

    async def first(self, conn: AsyncConnection, params: Mapping[str, Any]) -> Any | None:
        rows = await self.rows(conn, params)
        return rows[0] if rows else None


class GroupCommit(Generic[ItemT, AnswerT]):
    """Group commit: the items handed in while a statement is in flight are written together by the next,
    one round trip and one commit for all of them. `write(conn, items)` runs one statement (or one
    pipelined transaction) on an autocommit connection and answers each item, in order. An item is answered
    only once its statement has committed. A batch that fails is written again one item at a time, so an
    item PostgreSQL refuses fails alone. `turns`: a lock the writer holds while it takes and writes a batch
    (shared with other work that must not overlap a write)."""

    def __init__(
        self,
        db: Database,
        write: Callable[[AsyncConnection, list[ItemT]], Awaitable[list[AnswerT]]],
        *,
        max_batch: int = 256,
        turns: asyncio.Lock | None = None,
    ) -> None:
        self.db = db
        self._write = write
        self.max_batch = max_batch
        # held while a batch is taken and written: other work that must not overlap a write takes it too,
        # and what arrives while it waits joins the batch
        self._turns = turns if turns is not None else asyncio.Lock()
        self._waiting: list[tuple[ItemT, asyncio.Future[AnswerT]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.statements = 0  # statements run so far (diagnostics and tests)

    async def submit(self, item: ItemT) -> AnswerT:
        done: asyncio.Future[AnswerT] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        return await done

    async def _write_all(self) -> None:
        batch: list[tuple[ItemT, asyncio.Future[AnswerT]]] = []
        try:
            while self._waiting:
                async with self._turns:
                    # an item whose caller is gone (cancelled) is not written: nobody would hear of it
                    waiting = [(item, done) for item, done in self._waiting if not done.done()]
                    batch, self._waiting = waiting[: self.max_batch], waiting[self.max_batch :]
                    if not batch:
                        continue
                    try:
                        answers = await self._run([item for item, _ in batch])
                    except Exception:
                        await self._one_by_one(batch)
                    else:
                        for (_, done), answer in zip(batch, answers, strict=True):
                            if not done.done():
                                done.set_result(answer)
        except BaseException:  # cancelled (shutdown): nobody is left waiting forever
            for _, done in (*batch, *self._waiting):
                if not done.done():
                    done.set_exception(RuntimeError("the group writer stopped"))
            self._waiting = []
            raise
        finally:
            self._writer = None

    async def _one_by_one(self, batch: list[tuple[ItemT, asyncio.Future[AnswerT]]]) -> None:
        for item, done in batch:
            if done.done():
                continue
            try:
                (answer,) = await self._run([item])
            except Exception as exc:
                done.set_exception(exc)
            else:
                done.set_result(answer)

    async def _run(self, items: list[ItemT]) -> list[AnswerT]:
        self.statements += 1
        async with self.db.statement() as conn:
            return await self._write(conn, items)
