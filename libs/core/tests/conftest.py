"""What several of these test modules share: a plain NATS connection to the test run's server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient


@pytest.fixture(scope="module")
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """One connection per test module (a module that needs another kind, a cluster's, defines its own)."""
    async with await nats.connect(nats_url) as client:
        yield client
