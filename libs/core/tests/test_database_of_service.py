"""A service's pool is built from its settings alone, the ping policy included."""

from __future__ import annotations

import pytest
from browserfleet_core.db import Database
from browserfleet_core.settings import ServiceSettings
from sqlalchemy.pool import QueuePool

BUS = "nats://127.0.0.1:1"  # required by the settings, never dialled here


async def test_the_pool_follows_the_settings(database_url: str) -> None:
    settings = ServiceSettings(
        nats_url=BUS, database_url=database_url, db_pool_size=3, db_ping_after_idle_seconds=2.5
    )
    db = Database.of_service(settings, "public")
    try:
        pool = db.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.size() == 6  # up to twice the pool size, all kept once opened
        # pinged only after an idle spell, not at every checkout (a round trip per statement)
        assert not getattr(pool, "_pre_ping", True)
        async with db.statement() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
    finally:
        await db.dispose()
    every = Database.of_service(
        ServiceSettings(nats_url=BUS, database_url=database_url, db_ping_after_idle_seconds=None), "x"
    )
    assert getattr(every.engine.pool, "_pre_ping", False)  # the setting unset: a ping at every checkout
    await every.dispose()


def test_a_service_without_a_database_url_is_told_so() -> None:
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        Database.of_service(ServiceSettings(nats_url=BUS, database_url=None), "public")
