"""Real PostgreSQL (and NATS, for handler tests) from the `browserfleet_devkit.testing` plugin."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import psycopg
import pytest
from browserfleet_auth import sessions
from browserfleet_auth.app import AuthApp, build
from browserfleet_auth.config import AuthConfig
from browserfleet_auth.settings import AuthSettings
from browserfleet_contracts.auth import TokenPair
from browserfleet_core import migrations
from browserfleet_core.db import to_driver_url
from browserfleet_devkit.testing import rolled_back_session, unique_name
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

PACKAGE = "browserfleet_auth"


@pytest.fixture(scope="session")
def migrated_url(database_url: str) -> str:
    migrations.upgrade(PACKAGE, database_url)
    return database_url


@pytest.fixture(scope="session")
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(to_driver_url(migrated_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with rolled_back_session(engine) as s:
        yield s


@pytest.fixture
def config() -> AuthConfig:
    return AuthConfig()


async def signed_in(
    session: AsyncSession, config: AuthConfig, email: str, password: str, *, client_ip: str | None = None
) -> TokenPair:
    """`sessions.login` of a user without a second factor: its tokens (an MFA challenge fails the test)."""
    pair = await sessions.login(session, config, email, password, client_ip=client_ip)
    assert isinstance(pair, TokenPair), pair
    return pair


@pytest.fixture(scope="session")
def fresh_database(database_url: str) -> Iterator[Callable[[], str]]:
    """Makes migrated databases of their own, for tests that must commit (real transactions, NATS handlers)
    without leaving rows behind for the rolled-back tests of the run's main database."""
    server, _, _ = database_url.rpartition("/")
    created: list[str] = []

    def make() -> str:
        name = unique_name("bf_auth_")
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = f"{server}/{name}"
        migrations.upgrade(PACKAGE, url)
        return url

    yield make
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        for name in created:
            with contextlib.suppress(psycopg.Error):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
async def running(nats_url: str, fresh_database: Callable[[], str]) -> AsyncIterator[AuthApp]:
    """The auth service on real NATS, on a database of its own (one per test module)."""
    app = build(AuthSettings(nats_url=nats_url, database_url=fresh_database()))
    await app.broker.start()
    yield app
    await app.broker.stop()
    assert app.db is not None
    await app.db.dispose()
