"""The scheduler's runtime: what its handlers and consumers need once the service has started."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from browserfleet_core.db import Database
from browserfleet_core.health import Health
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.runtime_parts import required

from .policy import Policy, Pool
from .pools import PoolRegistry
from .workerauth import WorkerAuthenticator

log = logging.getLogger(__name__)

NOT_STARTED = "scheduler runtime not started"


@dataclass
class Runtime:
    """Built by `app.SchedulerApp`. Empty while only the broker's shape is wanted (AsyncAPI generation),
    which is why its parts are optional here and checked when a handler asks for them."""

    database: Database | None = None
    outbox_relay: OutboxRelay | None = None
    authenticator: WorkerAuthenticator | None = None
    redelivery_seconds: float = 2.0
    policy: Policy = field(default_factory=Policy)
    # set after a commit that may let admission do something (a new task, a finished one)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # sends `tasks.cancel.<task_id>` to whichever worker runs it (core NATS)
    signal_cancel: Callable[[str], Awaitable[None]] | None = None
    # the pools workers registered in (worker-gateway), routed to beside POOLS
    registry: PoolRegistry | None = None
    # its checks (SchedulerApp); none while only the broker's shape is wanted
    health: Health | None = None

    async def registered_pools(self) -> tuple[Pool, ...]:
        return await self.registry.snapshot() if self.registry is not None else ()

    async def registered_pools_now(self) -> tuple[Pool, ...]:
        """`registered_pools` without waiting for a refresh (`PoolRegistry.current`): a create's."""
        if self.registry is None:
            return ()
        pools = self.registry.current()
        return pools if pools is not None else await self.registry.snapshot()

    @property
    def db(self) -> Database:
        return required(self.database, NOT_STARTED)

    @property
    def relay(self) -> OutboxRelay:
        return required(self.outbox_relay, NOT_STARTED)

    @property
    def workers(self) -> WorkerAuthenticator:
        return required(self.authenticator, NOT_STARTED)

    async def cancel_signal(self, task_id: str) -> None:
        if self.signal_cancel is not None:
            try:
                await self.signal_cancel(task_id)
            except Exception:
                log.exception("sending the cancel signal of %s failed", task_id)
