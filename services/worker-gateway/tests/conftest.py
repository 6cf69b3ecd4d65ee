from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from browserfleet_core.db import Database
from browserfleet_core.migrations import upgrade
from browserfleet_devkit.testing import rolled_back_session
from browserfleet_worker_gateway.models import SCHEMA
from browserfleet_worker_gateway.runtime import WorkerGatewayRuntime
from browserfleet_worker_gateway.settings import WorkerGatewaySettings
from nats.aio.client import Client as NatsClient
from sqlmodel.ext.asyncio.session import AsyncSession


@pytest.fixture(scope="session")
def wg_settings(nats_url: str, database_url: str) -> WorkerGatewaySettings:
    return WorkerGatewaySettings(nats_url=nats_url, database_url=database_url, offline_after_seconds=15)


@pytest.fixture(scope="session")
def wg_migrated(database_url: str) -> str:
    upgrade("browserfleet_worker_gateway", database_url)
    return database_url


@pytest.fixture(scope="session")
async def wg_db(wg_migrated: str) -> AsyncIterator[Database]:
    db = Database(wg_migrated, SCHEMA, pool_size=2)
    yield db
    await db.dispose()


@pytest.fixture
async def session(wg_db: Database) -> AsyncIterator[AsyncSession]:
    async with rolled_back_session(wg_db.engine) as s:
        yield s


@pytest.fixture(scope="module")
async def nc(nats_url: str, gateway: WorkerGatewayRuntime) -> AsyncIterator[NatsClient]:
    """The test's own client, once the module's `gateway` serves (so its subjects answer)."""
    client = await nats.connect(nats_url)
    yield client
    await client.drain()
