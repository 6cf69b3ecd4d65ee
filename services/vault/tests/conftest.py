from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator

import pytest
from browserfleet_core.db import Database
from browserfleet_core.migrations import upgrade
from browserfleet_core.testing import rolled_back_session
from browserfleet_vault.crypto import Keyring
from browserfleet_vault.models import SCHEMA
from browserfleet_vault.settings import VaultSettings
from sqlmodel.ext.asyncio.session import AsyncSession

MASTER_KEY = os.urandom(32)


@pytest.fixture(scope="session")
def vault_settings(nats_url: str, database_url: str) -> VaultSettings:
    return VaultSettings(
        nats_url=nats_url,
        database_url=database_url,
        vault_master_key=base64.b64encode(MASTER_KEY).decode(),
        vault_master_key_version=1,
    )


@pytest.fixture(scope="session")
def keyring(vault_settings: VaultSettings) -> Keyring:
    return Keyring.from_settings(vault_settings)


@pytest.fixture(scope="session")
def vault_migrated(database_url: str) -> str:
    upgrade("browserfleet_vault", database_url)
    return database_url


@pytest.fixture(scope="session")
async def vault_db(vault_migrated: str) -> AsyncIterator[Database]:
    db = Database(vault_migrated, SCHEMA, pool_size=2)
    yield db
    await db.dispose()


@pytest.fixture
async def session(vault_db: Database) -> AsyncIterator[AsyncSession]:
    async with rolled_back_session(vault_db.engine) as s:
        yield s


@pytest.fixture
def master_key() -> bytes:
    return MASTER_KEY
