"""Organization deletion, as every service that keeps org data consumes it.

auth deletes an organization and publishes `organization.deleted` on EVENTS through its outbox
(`events.<org_id>.organization.deleted`, `Nats-Msg-Id` `<org_id>:organization.deleted`). Each service with
org data has its own durable pull consumer (`<service>-org-deleted`, filter `events.*.organization.deleted`,
explicit acks) and removes that org's rows. Deleting by org id is idempotent, so a redelivered or re-published
event removes nothing twice; a failure nacks the event (with a delay) and JetStream offers it again.

`delete_org_rows` deletes from every table of a service's metadata that has an `org_id` column, children
before parents, so a table added later is covered without editing the consumer; each service's tests pin the
tables that have no `org_id` (rows removed by a foreign-key cascade, or not org data at all).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping

from browserfleet_contracts import subjects
from browserfleet_contracts.events import EventEnvelope
from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsMessage
from pydantic import ValidationError
from sqlalchemy import MetaData, delete
from sqlmodel.ext.asyncio.session import AsyncSession

from .event_consumer import events_subscriber

log = logging.getLogger(__name__)

ORGANIZATION_DELETED = "organization.deleted"
# every org's deletion event: `events.<org_id>.organization.deleted`
ORGANIZATION_DELETED_ALL = subjects.event("*", ORGANIZATION_DELETED)
# a failed purge is offered again after this long, not in a tight loop while Postgres is down
RETRY_SECONDS = 2.0

Purge = Callable[[str], Awaitable[Mapping[str, int]]]


def durable_name(service: str) -> str:
    """The service's own durable consumer of organization deletions (one per service, shared by replicas)."""
    return f"{service}-org-deleted"


async def delete_org_rows(
    session: AsyncSession, metadata: MetaData, org_id: str, *, skip: Collection[str] = ()
) -> dict[str, int]:
    """Delete `org_id`'s rows from every table of `metadata` with an `org_id` column (dependants first).
    Returns the number of rows removed per table; running it again removes nothing."""
    removed: dict[str, int] = {}
    for table in reversed(metadata.sorted_tables):
        if "org_id" not in table.c or table.name in skip:
            continue
        result = await session.execute(delete(table).where(table.c.org_id == org_id))
        removed[table.name] = int(getattr(result, "rowcount", 0) or 0)
    return removed


def org_deleted_router(service: str, purge: Purge, *, retry_seconds: float = RETRY_SECONDS) -> NatsRouter:
    """A router with the service's `organization.deleted` consumer; `purge(org_id)` removes the org's data
    (in one transaction) and returns what it removed. Not on the rpc router: a failure must leave the event
    unacknowledged so that JetStream offers it again."""
    router = NatsRouter()
    durable = durable_name(service)

    @events_subscriber(
        router,
        ORGANIZATION_DELETED_ALL,
        durable,
        batch_size=4,
        title=f"{service}.organization_deleted",
        description=f"organization.deleted (EventEnvelope): {service} removes that organization's data.",
    )
    async def on_organization_deleted(msg: NatsMessage) -> None:
        try:
            event = EventEnvelope.model_validate_json(msg.body)
        except ValidationError as exc:
            # a malformed event will never parse: terminate it instead of redelivering it forever
            log.error("dropping malformed organization event on %s: %s", msg.raw_message.subject, exc)
            await msg.reject()
            return
        if event.type != ORGANIZATION_DELETED or not event.org_id:
            log.warning("ignoring %s event %s on the organization-deletion consumer", event.type, event.id)
            await msg.ack()
            return
        try:
            removed = await purge(event.org_id)
        except Exception:
            log.exception("removing organization %s failed; the event will be offered again", event.org_id)
            await msg.nack(delay=retry_seconds)
            return
        log.info("organization %s deleted: removed %s", event.org_id, dict(removed))
        await msg.ack()

    return router
