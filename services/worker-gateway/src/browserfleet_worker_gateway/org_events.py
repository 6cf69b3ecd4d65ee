"""Organization deletion (auth's `organization.deleted` on EVENTS): the org's workers and invites go.

A deleted worker's key stops authenticating at once here (the scheduler may trust a cached answer for its
`WORKER_AUTH_CACHE_SECONDS`). Platform-wide workers and invites (no org) are never touched. Idempotent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from browserfleet_contracts import subjects
from browserfleet_core.org_events import delete_org_rows, org_deleted_router
from faststream.nats import NatsRouter
from sqlmodel.ext.asyncio.session import AsyncSession

from .models import WorkersBase

if TYPE_CHECKING:
    from .app import WorkerGatewayContext

NOT_ORG_SCOPED: frozenset[str] = frozenset()


async def purge_org(session: AsyncSession, org_id: str) -> dict[str, int]:
    return await delete_org_rows(session, WorkersBase.metadata, org_id)


def build_org_events_router(ctx: WorkerGatewayContext) -> NatsRouter:
    async def purge(org_id: str) -> dict[str, int]:
        async with ctx.db.transaction() as session:
            return await purge_org(session, org_id)

    return org_deleted_router(subjects.Workers.QUEUE, purge)
