"""What the webhooks service's handlers need at run time: settings, the database, the secret box that seals
signing secrets, the outbox relay, and the dispatcher that new deliveries wake."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from browserfleet_core.db import AsyncSession, Database
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.runtime_parts import Required

from .crypto import SecretBox
from .dispatcher import Dispatcher
from .models import SCHEMA, outbox
from .settings import WebhooksSettings

P = ParamSpec("P")
T = TypeVar("T")


def _missing(part: str) -> str:
    return f"webhooks runtime has no {part} (broker built for documentation only)"


@dataclass
class WebhooksRuntime:
    settings: WebhooksSettings
    # all None when the broker is built only to describe itself
    _db: Database | None = None
    _dispatcher: Dispatcher | None = None
    _box: SecretBox | None = None
    _relay: OutboxRelay | None = None

    @classmethod
    def create(cls, settings: WebhooksSettings) -> WebhooksRuntime:
        """Connects to nothing: the database pool opens on first use, the dispatcher and relay run once
        started. Refuses to build without DATABASE_URL or WEBHOOK_MASTER_KEY."""
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is required for the webhooks service")
        box = SecretBox.from_settings(settings)
        db = Database.of_service(settings, SCHEMA)
        relay = OutboxRelay(db, outbox, poll_seconds=settings.outbox_poll_seconds, publish_on_commit=True)
        return cls(settings, db, Dispatcher(db, settings, box, relay), box, relay)

    db = Required[Database](_missing("database"))
    dispatcher = Required[Dispatcher](_missing("dispatcher"))
    box = Required[SecretBox](_missing("secret box"))
    relay = Required[OutboxRelay](_missing("outbox relay"))

    async def wake_dispatcher(self) -> None:
        if self._dispatcher is not None:
            await self._dispatcher.wake()

    async def run_then_wake(
        self, work: Callable[Concatenate[AsyncSession, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`db.run(work, ...)` for a command that makes something due (a test event, a replay, an endpoint
        enabled again): once it committed, the dispatcher sends it now rather than at its next poll."""
        result = await self.db.run(work, *args, **kwargs)
        await self.wake_dispatcher()
        return result
