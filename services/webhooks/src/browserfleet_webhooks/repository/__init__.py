"""Every query of the webhooks service, by concern. Org-scoped reads always filter by org_id."""

from __future__ import annotations

from browserfleet_core.db import AsyncSession
from browserfleet_core.org_events import delete_org_rows

from ..models import WebhooksBase
from .deliveries import (
    Claimed,
    NewDelivery,
    claim_due,
    count_replayable,
    get_delivery,
    insert_deliveries,
    list_attempts,
    list_deliveries,
    record_attempt,
    requeue,
    requeue_replayable,
)
from .endpoints import (
    EndpointFilter,
    Health,
    clear_legacy_secret,
    delete_endpoint,
    disable_endpoint,
    endpoints_for_events,
    ensure_task_url_endpoints,
    get_endpoint,
    legacy_secrets,
    list_endpoints,
    record_health,
)
from .jobs import get_job, next_running_job
from .keys import (
    current_key,
    delete_expired_keys,
    insert_org_key_if_missing,
    keys_of,
    live_keys,
    lock_owner,
)
from .rows import save

# tables without an org_id column, which purge_org does not reach: removed through their delivery (cascade),
# or not org data (the outbox holds published events)
NOT_ORG_SCOPED = frozenset({"webhook_attempts", "outbox"})


async def purge_org(session: AsyncSession, org_id: str) -> dict[str, int]:
    """Every row of the organization, from every table with an `org_id` (rows removed per table)."""
    return await delete_org_rows(session, WebhooksBase.metadata, org_id)


__all__ = [
    "NOT_ORG_SCOPED",
    "Claimed",
    "EndpointFilter",
    "Health",
    "NewDelivery",
    "claim_due",
    "clear_legacy_secret",
    "count_replayable",
    "current_key",
    "delete_endpoint",
    "delete_expired_keys",
    "disable_endpoint",
    "endpoints_for_events",
    "ensure_task_url_endpoints",
    "get_delivery",
    "get_endpoint",
    "get_job",
    "insert_deliveries",
    "insert_org_key_if_missing",
    "keys_of",
    "legacy_secrets",
    "list_attempts",
    "list_deliveries",
    "list_endpoints",
    "live_keys",
    "lock_owner",
    "next_running_job",
    "purge_org",
    "record_attempt",
    "record_health",
    "requeue",
    "requeue_replayable",
    "save",
]
