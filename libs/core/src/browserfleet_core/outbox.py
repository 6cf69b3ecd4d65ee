"""Transactional outbox: a state change and the message it implies commit together.

A service writes the message into its own `outbox` table inside the same transaction as the change;
`OutboxRelay` publishes committed rows to JetStream with their stable `Nats-Msg-Id` and marks them sent.
A crash between commit and publish only delays the message: the relay finds the row on its next pass,
and JetStream's duplicate window drops the copy if the first publish did land. A published row is deleted
once it is well past that window (`KEEP_PUBLISHED_SECONDS`): without it the table grew by every event the
service ever wrote (four rows per task in the scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import timedelta
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    BindParameter,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    String,
    Table,
    all_,
    any_,
    bindparam,
    delete,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel.ext.asyncio.session import AsyncSession

from .db import Database, after_commit, utcnow
from .streams import DUPLICATE_WINDOW_SECONDS

log = logging.getLogger(__name__)

# A published row's msg_id still drops a re-enqueued copy (ON CONFLICT) while JetStream would also drop its
# publish; past the window consumers' idempotence is what counts, so the row is kept a good while longer, then
# deleted by the relay, `PRUNE_BATCH` rows per statement, at most every `PRUNE_EVERY_SECONDS`.
KEEP_PUBLISHED_SECONDS = 6 * DUPLICATE_WINDOW_SECONDS
PRUNE_EVERY_SECONDS = 60.0
PRUNE_BATCH = 5_000
# A fast-path publish JetStream has not acknowledged within this long is the relay's again (nats-py's own
# JetStream publish gives up after as long).
ACK_TIMEOUT_SECONDS = 5.0

# (id, subject, payload, msg_id) of a committed outbox row
OutboxRow = tuple[int, str, bytes, str]


def _ids(ids: set[int] | list[int]) -> BindParameter[Any]:
    """Row ids as one array parameter: `id = ANY(...)` is one statement (prepared once, planned once) for
    any count, where `IN (...)` renders a parameter per id, hundreds per pass, a new statement each time."""
    array: ARRAY[Any] = ARRAY(BigInteger)
    return bindparam("ids", sorted(ids), type_=array)


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


@dataclass(eq=False)
class OutboxRelay:
    """`publish_on_commit=True` (once started) publishes a transaction's messages right after its commit,
    from memory, instead of waking the relay to read them back: no outbox SELECT and no extra transaction
    between a commit and its message. The rows are marked sent later, many in one UPDATE at the next
    pass. What that fast path does not publish (a failed publish, a crash between commit and publish)
    is still in the table unmarked and the relay publishes it; a row published but not yet marked may
    be published twice (by another replica's relay, or after a crash), which JetStream drops by its
    Nats-Msg-Id within the stream's duplicate window, and consumers are idempotent past it.

    The fast path does not wait for JetStream's acks, nor take a turn of the event loop: each message is
    written to the connection's buffer as it is published (a core-NATS PUB with its reply subject on the
    relay's own ack inbox), so a writer's answer that follows it on the connection leaves after it, and the
    ack, when it comes, marks the row for the next pass. A message not acked within
    `ACK_TIMEOUT_SECONDS`, or refused, is left to the relay.

    `on_committed`, if given, is called with the rows of every transaction this process committed through
    the relay (and with the rows handed to `committed`), once, after the commit and before they are
    published, whether or not the fast path is on: what a service counts by the messages its commits
    imply (the scheduler's task transitions). A rolled-back transaction's rows never reach it, nor does a
    row whose msg id was already in the outbox, nor a row the relay's own pass publishes (counted, if at
    all, by the process that committed it). It runs on the committing coroutine: keep it cheap."""

    db: Database
    table: Table
    _: KW_ONLY
    poll_seconds: float = 1.0
    batch: int = 200
    publish_on_commit: bool = False
    on_committed: Callable[[Sequence[OutboxRow]], None] | None = None

    def __post_init__(self) -> None:
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._js: JetStreamContext | None = None
        self._inflight: set[int] = set()  # committed rows the fast path is publishing now
        self._published: set[int] = set()  # published by the fast path, not yet marked in the table
        # the fast path's publishes awaiting JetStream's ack: token (its reply subject's last token) ->
        # (row id, when sent), oldest first; `_acked` is set whenever none is awaited
        self._acks: dict[str, tuple[int, float]] = {}
        self._acked = asyncio.Event()
        self._acked.set()
        self._tokens = itertools.count()
        self._ack_inbox: str | None = None  # "<the connection's inbox>." while `_ack_sub` takes acks
        self._ack_sub: Subscription | None = None
        self._ack_sub_lock = asyncio.Lock()
        self._pruned_at = 0.0  # the first pass prunes: a service that restarts often still does
        # built once and run with the row as parameters: on the hot path, composing the INSERT per
        # message cost more CPU than the round trip
        from sqlalchemy.dialects.postgresql import insert

        self._insert = insert(self.table).on_conflict_do_nothing(index_elements=["msg_id"])
        self._insert_returning = self._insert.returning(self.table.c.id)

    async def enqueue(
        self, session: AsyncSession, subject: str, payload: BaseModel | bytes, msg_id: str
    ) -> None:
        """Add a message to the current transaction; it is published once the transaction commits."""
        data = payload if isinstance(payload, bytes) else payload.model_dump_json().encode()
        row = {"subject": subject, "msg_id": msg_id, "payload": data, "created_at": utcnow()}
        if self._fast() or self.on_committed is not None:
            row_id = (await session.execute(self._insert_returning, row)).scalar_one_or_none()
            if row_id is not None:  # None: the msg id is already in the outbox (sent or on its way)
                self._on_commit(session, [(row_id, subject, data, msg_id)])
            return
        await session.execute(self._insert, row)
        after_commit(session, self._kick)

    async def committed(self, rows: list[OutboxRow]) -> None:
        """Rows (id, subject, payload, msg_id) already committed outside `Database.transaction()` (a write
        that is one statement on `Database.statement()`, its outbox INSERT in the same statement): published
        now as the fast path publishes a transaction's rows, else left to the relay's next pass.

        Returns without waiting for JetStream's acks and without a turn of the event loop: the caller's
        answer (a created task's 201, a worker's granted claim) waits for neither, and as every row is on the
        connection when this returns, the answer still leaves after them. A publish that fails is the
        relay's, as ever."""
        if not rows:
            return
        if self.on_committed is not None:
            self.on_committed(rows)
        if self._fast():
            await self._publish_committed(rows)
        else:
            self._wake.set()

    def _fast(self) -> bool:
        return self.publish_on_commit and self._js is not None

    def _on_commit(self, session: AsyncSession, rows: list[OutboxRow]) -> None:
        pending: list[OutboxRow] | None = session.info.get("outbox_publish")
        if pending is None:
            pending = session.info["outbox_publish"] = []
            batch = pending

            async def publish() -> None:
                if self.on_committed is not None:
                    self.on_committed(batch)
                if self._fast():
                    await self._publish_committed(batch)
                else:  # only counted (`on_committed`): the relay's pass publishes them
                    self._wake.set()

            after_commit(session, publish)
        pending.extend(rows)

    async def _publish_committed(self, rows: list[OutboxRow]) -> None:
        """Each row's message written to the connection, in order, its ack to come to `_on_ack`. A write
        does not wait for the socket (nats-py's publish only queues it for the connection's flusher)."""
        assert self._js is not None
        inbox = self._ack_inbox or await self._subscribe_acks()
        nc = self._js._nc
        sent_at = time.monotonic()
        for row_id, subject, data, msg_id in rows:
            token = str(next(self._tokens))
            self._inflight.add(row_id)
            self._acks[token] = (row_id, sent_at)
            self._acked.clear()
            try:
                await nc.publish(subject, data, reply=inbox + token, headers={"Nats-Msg-Id": msg_id})
            except Exception:
                log.warning("publishing committed outbox row %d failed; the relay retries", row_id)
                self._forget(token)
                self._wake.set()

    async def _subscribe_acks(self) -> str:
        """The relay's ack inbox, subscribed on first use (its SUB precedes every PUB naming it)."""
        assert self._js is not None
        async with self._ack_sub_lock:
            inbox = self._ack_inbox
            if inbox is None:
                nc = self._js._nc
                inbox = f"{nc.new_inbox()}."
                self._ack_sub = await nc.subscribe(f"{inbox}*", cb=self._on_ack)
                self._ack_inbox = inbox
            return inbox

    async def _on_ack(self, msg: Msg) -> None:
        inbox = self._ack_inbox
        found = self._forget(msg.subject[len(inbox) :]) if inbox else None
        if found is None:  # given up on already (`_expire_acks`): the relay has it
            return
        if _acknowledged(msg):
            self._published.add(found)
        else:
            log.warning("JetStream refused committed outbox row %d; the relay retries", found)
            self._wake.set()

    def _forget(self, token: str) -> int | None:
        """The row of an awaited ack, no longer awaited (no longer in flight either)."""
        found = self._acks.pop(token, None)
        if found is None:
            return None
        self._inflight.discard(found[0])
        if not self._acks:
            self._acked.set()
        return found[0]

    def _expire_acks(self) -> None:
        """Rows whose ack did not come in time go back to the relay (JetStream drops a copy of one that did
        land, by its msg id)."""
        cutoff = time.monotonic() - ACK_TIMEOUT_SECONDS
        expired = list(itertools.takewhile(lambda t: self._acks[t][1] < cutoff, self._acks))
        for token in expired:
            self._forget(token)
        if expired:
            log.warning("%d committed outbox message(s) not acked in time; the relay retries", len(expired))

    async def _mark_published(self) -> None:
        """Mark what the fast path published, in one UPDATE (a failure leaves them for the next pass)."""
        if not self._published:
            return
        ids, self._published = self._published, set()
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    update(self.table).where(self.table.c.id == any_(_ids(ids))).values(published_at=utcnow())
                )
        except Exception:
            self._published |= ids
            raise

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
        stmt = insert(self.table).values(rows).on_conflict_do_nothing(index_elements=["msg_id"])
        if self._fast() or self.on_committed is not None:
            t = self.table
            returning = stmt.returning(t.c.id, t.c.subject, t.c.payload, t.c.msg_id)
            inserted = (await session.execute(returning)).all()
            if inserted:
                self._on_commit(session, [(r.id, r.subject, r.payload, r.msg_id) for r in inserted])
            return
        await session.execute(stmt)
        after_commit(session, self._kick)

    async def _kick(self) -> None:
        self._wake.set()

    def start(self, js: JetStreamContext) -> None:
        self._js = js
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._acks:  # their acks are on the way; without them the next start publishes them again
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), ACK_TIMEOUT_SECONDS)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await (
                self._mark_published()
            )  # else the next start publishes them again (and JetStream drops them)
        except Exception:
            log.warning("marking published outbox rows at stop failed; they will be published again")
        sub, self._ack_sub, self._ack_inbox = self._ack_sub, None, None
        if sub is not None:
            with contextlib.suppress(Exception):  # a closed connection took it with it
                await sub.unsubscribe()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()
            if time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS:
                self._pruned_at = time.monotonic()
                try:  # apart from publishing: a bus that refuses messages does not stop the table's upkeep
                    await self.prune()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("deleting old published outbox rows failed; next time then")
            try:
                self._expire_acks()
                await self._mark_published()
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
                        # rows the fast path holds: being published now, or published and not yet marked
                        .where(t.c.id != all_(_ids(self._inflight | self._published)))
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
                update(t).where(t.c.id == any_(_ids([r.id for r in rows]))).values(published_at=utcnow())
            )
        return len(rows)

    async def prune(self, keep_seconds: float | None = None) -> int:
        """Delete rows published more than `keep_seconds` ago, oldest first, `PRUNE_BATCH` per statement
        (each its own short transaction, so a large backlog never holds locks for long). Unpublished rows are
        never touched. Returns how many were deleted."""
        t = self.table
        keep = KEEP_PUBLISHED_SECONDS if keep_seconds is None else keep_seconds
        cutoff = utcnow() - timedelta(seconds=keep)
        total = 0
        while True:
            doomed = (
                select(t.c.id)
                .where(t.c.published_at < cutoff)
                .order_by(t.c.id)
                .limit(PRUNE_BATCH)
                .scalar_subquery()
            )
            async with self.db.transaction() as session:
                result = await session.execute(delete(t).where(t.c.id.in_(doomed)))
            deleted = int(getattr(result, "rowcount", 0) or 0)
            total += deleted
            if deleted < PRUNE_BATCH:
                return total


def _acknowledged(msg: Msg) -> bool:
    """Whether a JetStream publish's reply stored the message (a duplicate was stored before): not a status
    such as 503 no responders, not an API error."""
    if msg.headers and msg.headers.get("Status"):
        return False
    try:
        reply = json.loads(msg.data)
    except ValueError:
        return False
    return isinstance(reply, dict) and "error" not in reply and "seq" in reply
