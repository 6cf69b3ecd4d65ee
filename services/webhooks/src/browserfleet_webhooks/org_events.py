"""Organization deletion (auth's `organization.deleted` on EVENTS): the org's endpoints and deliveries go.

A delivery the dispatcher holds at that moment is not recorded afterwards (its row is gone, so
`record_attempt` writes nothing). Idempotent: a second event removes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from browserfleet_core.org_events import delete_org_rows, org_deleted_router
from faststream.nats import NatsRouter
from sqlmodel.ext.asyncio.session import AsyncSession

from .models import WebhooksBase

if TYPE_CHECKING:
    from .app import Runtime

# tables without an org_id column: removed through their delivery (cascade)
NOT_ORG_SCOPED = frozenset({"webhook_attempts"})


async def purge_org(session: AsyncSession, org_id: str) -> dict[str, int]:
    return await delete_org_rows(session, WebhooksBase.metadata, org_id)


def build_org_events_router(rt: Runtime, service: str = "webhooks") -> NatsRouter:
    async def purge(org_id: str) -> dict[str, int]:
        async with rt.database().transaction() as session:
            return await purge_org(session, org_id)

    return org_deleted_router(service, purge)
