"""Whether a batch of events has a taker: an enabled endpoint of one of their orgs subscribed to one of their
filters. Every batch the EVENTS consumer takes asks it, and on a platform where no endpoint subscribes (most
batches) it is all the database work a batch costs.

Asked through SQLAlchemy (a pool checkout and its autocommit switch, the statement's cache key, an execution
context) it cost several times what PostgreSQL spends answering it. The consumer takes one batch at a time,
so it asks on a connection of its own (autocommit: no transaction, each question a snapshot of committed
endpoints, as before), with fixed SQL prepared once. A connection found dead is replaced and the question
asked again at once (it only reads)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import psycopg
from browserfleet_core.db import Database
from psycopg import AsyncRawCursor
from sqlalchemy import Table

from ..models import ENDPOINT, WebhookEndpoint

_ENDPOINTS: Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]
_TABLE = f"{_ENDPOINTS.schema}.{_ENDPOINTS.name}" if _ENDPOINTS.schema else _ENDPOINTS.name

# what `endpoints.endpoints_for_events` selects, reduced to whether there is a row
_ANY: Final = f"""
SELECT 1 FROM {_TABLE}
WHERE org_id = ANY($1::text[]) AND enabled IS true AND kind = $3::text AND events ?| $2::text[]
LIMIT 1
"""  # noqa: S608 (the table's own name)


class TakerCheck:
    """The question on its own connection, one per `Database` (`of(db)`); `close()` when the consumer stops."""

    @classmethod
    def of(cls, db: Database) -> TakerCheck:
        return db.attached(cls)

    def __init__(self, db: Database) -> None:
        self.db = db
        self._own = db.own_connection()

    async def any_endpoint(self, org_ids: Collection[str], filters: Collection[str]) -> bool:
        if not org_ids or not filters:
            return False
        params = (sorted(org_ids), sorted(filters), ENDPOINT)
        try:
            return await self._ask(params)
        except psycopg.OperationalError:
            # most likely a connection that died while idle (a PostgreSQL restart, a proxy's idle timeout);
            # the question only reads, so it is asked once more, on a new connection, before the batch fails
            return await self._ask(params)

    async def _ask(self, params: tuple[Any, ...]) -> bool:
        pg = await self._own.get()
        try:
            async with AsyncRawCursor(pg) as cursor:
                await cursor.execute(_ANY, params, prepare=True)
                return await cursor.fetchone() is not None
        except BaseException:
            await self._own.failed(pg)
            raise

    async def close(self) -> None:
        """Close the connection (a later question opens a new one)."""
        await self._own.close()
