"""Organization deletion (auth's `organization.deleted` on EVENTS): the org's workers and invites go.

A deleted worker's key stops authenticating at once here (the scheduler may trust a cached answer for its
`WORKER_AUTH_CACHE_SECONDS`). Platform-wide workers and invites (no org) are never touched. Idempotent.
"""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_core.org_events import org_deleted_router
from faststream.nats import NatsRouter

from . import repository
from .runtime import WorkerGatewayRuntime


def build_org_events_router(rt: WorkerGatewayRuntime) -> NatsRouter:
    async def purge(org_id: str) -> dict[str, int]:
        return await rt.db.run(repository.purge_org, org_id)

    return org_deleted_router(endpoints.Workers.QUEUE, purge)
