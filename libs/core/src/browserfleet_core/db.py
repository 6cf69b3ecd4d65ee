"""Database access: one async engine per service, its own schema, transactions owned by the caller.

Services never commit. Handlers open `db.transaction()` (or `db.run(service_fn, ...)`); it commits when the
block succeeds and only then runs the callbacks registered with `after_commit` (publishing events, waking
the outbox relay), so a rolled-back change never announces itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine

# re-exported: service modules take the session type from here and never import SQLAlchemy themselves
from sqlmodel.ext.asyncio.session import AsyncSession as AsyncSession

if TYPE_CHECKING:
    import psycopg

    from .settings import ServiceSettings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

AfterCommit = Callable[[], Awaitable[None]]
P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")


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

    @classmethod
    def of_service(cls, settings: ServiceSettings, schema: str) -> Database:
        """A service's pool as its settings say: DATABASE_URL, DB_POOL_SIZE and
        DB_PING_AFTER_IDLE_SECONDS. Every service takes it from here, so none pings at every checkout
        by forgetting the last one (auth, vault and worker-gateway did: a round trip per statement)."""
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is required")
        return cls(
            settings.database_url,
            schema,
            pool_size=settings.db_pool_size,
            ping_after_idle=settings.db_ping_after_idle_seconds,
        )

    def __init__(
        self, url: str, schema: str, *, pool_size: int = 10, ping_after_idle: float | None = None
    ) -> None:
        self.schema = schema
        # Up to twice pool_size connections, as before, but all of them kept once opened: with
        # max_overflow the pool closed every connection past pool_size as it came back, so a service
        # busier than pool_size opened (a PostgreSQL backend fork, a TLS/auth handshake) and closed a
        # connection per transaction: ~2.5 % of the scheduler's samples under a burst.
        self.engine: AsyncEngine = create_async_engine(
            to_driver_url(url),
            pool_size=2 * pool_size,
            max_overflow=0,
            pool_pre_ping=ping_after_idle is None,
        )
        if ping_after_idle is not None:
            _ping_when_idle(self.engine, ping_after_idle)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._owned: weakref.WeakSet[OwnConnection] = weakref.WeakSet()
        self._attached: dict[Callable[[Database], Any], Any] = {}

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

    async def run(
        self, work: Callable[Concatenate[AsyncSession, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`work(session, *args, **kwargs)` in a transaction of its own: what a handler does with a
        service call (`return await db.run(service.get_task, body)`)."""
        async with self.transaction() as session:
            return await work(session, *args, **kwargs)

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection in autocommit mode, for work that is one SQL statement: PostgreSQL runs a
        statement atomically on its own, so the BEGIN and COMMIT round trips of `transaction()` (two of
        the three a one-statement transaction makes) and the ORM session are saved. Each statement run
        on it commits by itself: never run two that must commit together."""
        async with self._autocommit.connect() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def attached(self, kind: Callable[[Database], A]) -> A:
        """The one `kind(self)` of this database, made when first asked for: a writer or reader that keeps
        state of its own beside the pool (a group commit's queue, an own connection)."""
        found = self._attached.get(kind)
        if found is None:
            found = self._attached[kind] = kind(self)
        return cast(A, found)

    def own_connection(self, settings: Mapping[str, str] | None = None) -> OwnConnection:
        """A connection outside the pool, closed by `dispose()` (see `OwnConnection`); `settings`: what it
        SETs for its session each time it connects."""
        own = OwnConnection(self, settings)
        self._owned.add(own)
        return own

    async def dispose(self) -> None:
        for own in list(self._owned):
            await own.close()
        await self.engine.dispose()


class OwnConnection:
    """One psycopg connection of a writer's or reader's own, in autocommit (each statement commits by
    itself), made as the pool makes its connections. For work that runs one statement at a time: it gains
    nothing from the pool, whose checkout and checkin, autocommit switch and reset cost several times what
    PostgreSQL spends on a short statement. `get()` replaces a connection that is closed or broken;
    `failed()` discards one that a failure left in no known state."""

    def __init__(self, db: Database, settings: Mapping[str, str] | None = None) -> None:
        self.db = db
        self.settings = dict(settings or {})
        self._pg: psycopg.AsyncConnection[Any] | None = None
        self._connecting = asyncio.Lock()

    async def get(self) -> psycopg.AsyncConnection[Any]:
        async with self._connecting:
            pg = self._pg
            if pg is None or pg.closed or pg.broken:
                import psycopg  # a service with no own connection does not load it here

                engine = self.db.engine
                args, kwargs = engine.dialect.create_connect_args(engine.url)
                pg = await psycopg.AsyncConnection.connect(*args, **kwargs, autocommit=True)
                for name, value in self.settings.items():
                    await pg.execute("SELECT set_config(%s, %s, false)", (name, value))
                self._pg = pg
            return pg

    async def failed(self, pg: psycopg.AsyncConnection[Any]) -> None:
        """After a statement on `pg` raised: a refused statement leaves the connection idle and usable;
        anything else (a dead server, a statement cancelled in flight) leaves it in no known state, and
        the next statement gets a new one."""
        from psycopg.pq import TransactionStatus

        if pg.closed or pg.broken or pg.info.transaction_status != TransactionStatus.IDLE:
            await self._discard(pg)

    async def _discard(self, pg: psycopg.AsyncConnection[Any]) -> None:
        if self._pg is pg:
            self._pg = None
        with contextlib.suppress(Exception):
            await pg.close()

    async def close(self) -> None:
        """Close the connection (a later `get()` opens a new one)."""
        if self._pg is not None:
            await self._discard(self._pg)


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
            # the ping opened a transaction: close it, or an autocommit checkout (`Database.statement()`)
            # cannot switch the connection to autocommit, and a session would run inside the ping's
            dbapi_conn.rollback()
        except Exception as error:
            raise exc.DisconnectionError(f"idle connection failed its ping: {error}") from error


def jsonable(value: Any) -> Any:
    """What a JSONB column can hold (datetimes as ISO strings)."""
    import json

    return json.loads(json.dumps(value, default=str))
