from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from browserfleet_devkit.testing import ServiceSchema
from browserfleet_worker_gateway.models import SCHEMA
from browserfleet_worker_gateway.runtime import WorkerGatewayRuntime
from browserfleet_worker_gateway.settings import WorkerGatewaySettings
from nats.aio.client import Client as NatsClient


@pytest.fixture(scope="session")
def wg_settings(nats_url: str, database_url: str) -> WorkerGatewaySettings:
    return WorkerGatewaySettings(nats_url=nats_url, database_url=database_url, offline_after_seconds=15)


@pytest.fixture(scope="session")
def service_schema() -> ServiceSchema:
    return ServiceSchema("browserfleet_worker_gateway", SCHEMA)


@pytest.fixture(scope="module")
async def nc(nats_url: str, gateway: WorkerGatewayRuntime) -> AsyncIterator[NatsClient]:
    """The test's own client, once the module's `gateway` serves (so its subjects answer)."""
    client = await nats.connect(nats_url)
    yield client
    await client.drain()
