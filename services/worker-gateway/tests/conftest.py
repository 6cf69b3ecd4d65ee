from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from browserfleet_core.db import Database
from browserfleet_core.migrations import upgrade
from browserfleet_core.testing import rolled_back_session
from browserfleet_worker_gateway.models import SCHEMA
from browserfleet_worker_gateway.settings import WorkerGatewaySettings
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
