"""Organization deletion (auth's `organization.deleted` on EVENTS): the org's endpoints and deliveries go.

A delivery the dispatcher holds at that moment is not recorded afterwards (its row is gone, so
`record_attempt` writes nothing). Idempotent: a second event removes nothing.
"""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_core.org_events import org_deleted_router
from faststream.nats import NatsRouter

from . import repository
from .runtime import WebhooksRuntime


def build_org_events_router(rt: WebhooksRuntime) -> NatsRouter:
    async def purge(org_id: str) -> dict[str, int]:
        return await rt.db.run(repository.purge_org, org_id)

    return org_deleted_router(endpoints.Webhooks.QUEUE, purge)
