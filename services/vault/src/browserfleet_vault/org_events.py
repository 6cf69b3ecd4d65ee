"""Organization deletion (auth's `organization.deleted` on EVENTS): the org's credentials, data keys, stored
browser profiles and release records go, from every table of the vault schema with an `org_id` column
(credentials before the data keys they reference). Without its data keys nothing of the org can be decrypted
any more, even from a backup taken later. Idempotent: a second event removes nothing.
"""

from __future__ import annotations

from browserfleet_contracts import endpoints
from browserfleet_core.org_events import org_deleted_router
from faststream.nats import NatsRouter

from . import repository
from .runtime import VaultRuntime


def build_org_events_router(rt: VaultRuntime) -> NatsRouter:
    async def purge(org_id: str) -> dict[str, int]:
        return await rt.db.run(repository.purge_org, org_id)

    return org_deleted_router(endpoints.Vault.QUEUE, purge)
