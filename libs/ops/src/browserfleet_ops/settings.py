"""Where the ops commands find the platform: the same variables the services read (DATABASE_URL, NATS_URL,
NATS_USER / NATS_PASSWORD and the NATS_TLS_* files). On an authenticated bus they connect as a user allowed
to read and write the artifacts object store and to call the services' endpoints: the bus's `admin` user
(docs/operations.md)."""

from __future__ import annotations

from browserfleet_core.messaging import BusCredentials, connect
from browserfleet_core.settings import BusSettings
from nats.aio.client import Client as NatsClient
from pydantic import Field


class OpsSettings(BusSettings):
    nats_url: str = Field(default="nats://127.0.0.1:4222", description="the platform's NATS")
    database_url: str | None = Field(default=None, description="the platform's PostgreSQL database")

    def require_database(self) -> str:
        if not self.database_url:
            raise SystemExit("DATABASE_URL is required (the platform's database)")
        return self.database_url

    async def connect_nats(self) -> NatsClient:
        # one attempt: an operator's command should fail with the reason, not retry forever
        return await connect(
            self.nats_url,
            name="browserfleet-ops",
            credentials=BusCredentials.from_settings(self),
            max_reconnect_attempts=0,
            connect_timeout=10,
            allow_reconnect=False,
        )
