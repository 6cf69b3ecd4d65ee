"""Organization deletion (auth's `organization.deleted` on EVENTS): the org's credentials, data keys, stored
browser profiles and release records go, from every table of the vault schema with an `org_id` column
(credentials before the data keys they reference). Without its data keys nothing of the org can be decrypted
any more, even from a backup taken later. Idempotent: a second event removes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from browserfleet_contracts import subjects
from browserfleet_core.org_events import delete_org_rows, org_deleted_router
from faststream.nats import NatsRouter
from sqlmodel.ext.asyncio.session import AsyncSession

from .models import VaultBase

if TYPE_CHECKING:
    from .app import VaultContext

NOT_ORG_SCOPED: frozenset[str] = frozenset()


async def purge_org(session: AsyncSession, org_id: str) -> dict[str, int]:
    return await delete_org_rows(session, VaultBase.metadata, org_id)


def build_org_events_router(ctx: VaultContext) -> NatsRouter:
    async def purge(org_id: str) -> dict[str, int]:
        async with ctx.db.transaction() as session:
            return await purge_org(session, org_id)

    return org_deleted_router(subjects.Vault.QUEUE, purge)
