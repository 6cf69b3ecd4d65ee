"""Database access: one async engine per service, its own schema, transactions owned by the caller.

Services never commit. Handlers open `db.transaction()`; it commits when the block succeeds and only
then runs the callbacks registered with `after_commit` (publishing events, waking the outbox relay),
so a rolled-back change never announces itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

AfterCommit = Callable[[], Awaitable[None]]


def schema_metadata(schema: str) -> MetaData:
    """Metadata for one service's tables: its own schema and the shared constraint naming convention."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def to_driver_url(url: str) -> str:
    """Accept plain `postgresql://` URLs from users and select psycopg 3."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url.split(':', 1)[0]}://…")


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the surrounding `Database.transaction()` has committed."""
    session.info.setdefault("after_commit", []).append(callback)


class Database:
    """`ping_after_idle=None` pings every connection as it leaves the pool (SQLAlchemy's pool_pre_ping: one
    extra round trip per transaction). A number pings only connections that sat idle in the pool longer
    than that many seconds: a busy service reuses its connections within milliseconds and skips the
    round trip, while a connection left idle across a Postgres restart is still caught (and replaced)
    before a transaction uses it."""

    def __init__(
        self, url: str, schema: str, *, pool_size: int = 10, ping_after_idle: float | None = None
    ) -> None:
        self.schema = schema
        self.engine: AsyncEngine = create_async_engine(
            to_driver_url(url),
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=ping_after_idle is None,
        )
        if ping_after_idle is not None:
            _ping_when_idle(self.engine, ping_after_idle)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
            callbacks: list[AfterCommit] = session.info.pop("after_commit", [])
        for callback in callbacks:
            await callback()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """SQLAlchemy's pessimistic disconnect recipe, applied only to connections idle > `idle_seconds`:
    raising DisconnectionError on checkout makes the pool drop that connection and hand out another."""
    from sqlalchemy import event, exc

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since <= idle_seconds:
            return  # a new connection, or one in steady use
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except Exception as error:
            raise exc.DisconnectionError(f"idle connection failed its ping: {error}") from error


def jsonable(value: Any) -> Any:
    """What a JSONB column can hold (datetimes as ISO strings)."""
    import json

    return json.loads(json.dumps(value, default=str))


class TransactionBatcher:
    """Runs units of work that arrive at the same time in one shared transaction.

    `await batcher.run(work)` calls `work(session)` and returns its result once the transaction that
    ran it has committed (and its `after_commit` callbacks ran), exactly like
    `async with db.transaction() as s: return await work(s)`. Under load, concurrent calls share one
    transaction (up to `max_batch`), so N messages cost one BEGIN/COMMIT and one connection checkout
    instead of N. A lone call runs at once: batching adds no wait.

    All or nothing per unit: if any unit of a shared batch raises (or the commit fails), the whole batch is
    rolled back and every unit is run again in its own transaction, so a failing unit fails alone and
    never commits half of itself alongside the others. Units must therefore be safe to run twice
    after a rollback — which every consumer here already is (state checks, unique keys, row locks).
    """

    def __init__(self, db: Database, *, max_batch: int = 64, concurrency: int = 4) -> None:
        import asyncio

        self.db = db
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._queue: list[tuple[Callable[[AsyncSession], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # shared transactions committed (for tests and metrics)

    async def run(self, work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        import asyncio

        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((work, fut))
        if self._running < self.concurrency:
            self._running += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                if len(batch) == 1 or not await self._together(batch):
                    for work, fut in batch:
                        await self._alone(work, fut)
        finally:
            self._running -= 1

    async def _together(self, batch: list[tuple[Callable[[AsyncSession], Awaitable[Any]], Any]]) -> bool:
        results: list[Any] = []
        try:
            async with self.db.transaction() as session:
                for work, _ in batch:
                    results.append(await work(session))
        except Exception:
            return False  # rolled back; each unit runs again alone
        self.batches += 1
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)
        return True

    async def _alone(self, work: Callable[[AsyncSession], Awaitable[Any]], fut: Any) -> None:
        try:
            async with self.db.transaction() as session:
                result = await work(session)
        except BaseException as exc:  # handed to the caller, who decides
            if not fut.done():
                fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not fut.done():
            fut.set_result(result)
