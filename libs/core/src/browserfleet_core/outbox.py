"""Transactional outbox: a state change and the message it implies commit together.

A service writes the message into its own `outbox` table inside the same transaction as the change;
`OutboxRelay` publishes committed rows to JetStream with their stable `Nats-Msg-Id` and marks them sent.
A crash between commit and publish only delays the message: the relay finds the row on its next pass,
and JetStream's duplicate window drops the copy if the first publish did land.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    String,
    Table,
    select,
    update,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from .db import Database, after_commit, utcnow

log = logging.getLogger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("subject", String(512), nullable=False),
        Column("msg_id", String(256), nullable=False, unique=True),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True, index=True),
    )


class OutboxRelay:
    def __init__(self, db: Database, table: Table, *, poll_seconds: float = 1.0, batch: int = 200) -> None:
        self.db = db
        self.table = table
        self.poll_seconds = poll_seconds
        self.batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._js: JetStreamContext | None = None

    async def enqueue(
        self, session: AsyncSession, subject: str, payload: BaseModel | bytes, msg_id: str
    ) -> None:
        """Add a message to the current transaction; it is published once the transaction commits."""
        from sqlalchemy.dialects.postgresql import insert

        data = payload if isinstance(payload, bytes) else payload.model_dump_json().encode()
        stmt = (
            insert(self.table)
            .values(subject=subject, msg_id=msg_id, payload=data, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["msg_id"])
        )
        await session.execute(stmt)
        after_commit(session, self._kick)

    async def enqueue_many(
        self, session: AsyncSession, messages: list[tuple[str, BaseModel | bytes, str]]
    ) -> None:
        """`enqueue` for several (subject, payload, msg_id) at once: one INSERT for all of them."""
        if not messages:
            return
        from sqlalchemy.dialects.postgresql import insert

        now = utcnow()
        rows = [
            {
                "subject": subject,
                "msg_id": msg_id,
                "payload": payload if isinstance(payload, bytes) else payload.model_dump_json().encode(),
                "created_at": now,
            }
            for subject, payload, msg_id in messages
        ]
        await session.execute(
            insert(self.table).values(rows).on_conflict_do_nothing(index_elements=["msg_id"])
        )
        after_commit(session, self._kick)

    async def _kick(self) -> None:
        self._wake.set()

    def start(self, js: JetStreamContext) -> None:
        self._js = js
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()
            try:
                while await self.publish_pending() >= self.batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay pass failed; retrying")
                await asyncio.sleep(self.poll_seconds)

    async def publish_pending(self) -> int:
        assert self._js is not None, "relay not started"
        t = self.table
        async with self.db.transaction() as session:
            rows: list[Any] = list(
                (
                    await session.execute(
                        select(t.c.id, t.c.subject, t.c.msg_id, t.c.payload)
                        .where(t.c.published_at.is_(None))
                        .order_by(t.c.id)
                        .limit(self.batch)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
            )
            if not rows:
                return 0
            acks = await asyncio.gather(
                *(self._js.publish(r.subject, r.payload, headers={"Nats-Msg-Id": r.msg_id}) for r in rows)
            )
            del acks
            await session.execute(
                update(t).where(t.c.id.in_([r.id for r in rows])).values(published_at=utcnow())
            )
        return len(rows)
