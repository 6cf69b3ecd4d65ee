"""Single-use tickets for browser WebSockets, valid on every gateway replica.

A browser cannot set `Authorization` on a WebSocket, and a token in the URL would sit in proxy logs for its
whole lifetime. So an authenticated `POST /api/v1/events/ticket` stores who asked (never the token) in the
NATS KV bucket `ws_tickets` under the SHA-256 of a random ticket, and the upgrade presents `?ticket=`. The
first redeemer deletes the entry on the condition that it is still the revision it read, so of two replicas
racing for one ticket exactly one wins. A ticket lives `ttl` seconds (checked on redeem; the bucket's own
max age only sweeps unused ones).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Literal

from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor
from browserfleet_core.projection import project
from browserfleet_core.security import hash_token
from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoStreamResponseError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from ..deps import Principal

# the bucket's max age: longer than any ticket lives (GatewaySettings caps `ws_ticket_seconds` below it)
BUCKET_MAX_AGE_SECONDS = 300.0


class TicketHolder(BaseModel):
    """What a ticket stands for: the principal that asked for it, and until when its credential is valid."""

    actor: Actor
    kind: Literal["user", "api_key"]
    scopes: tuple[str, ...] = ()
    plan: str | None = None
    credential_expires_at: datetime | None = None
    issued: float | None = None  # the user's token's: a later sign-out everywhere ends the socket too
    ticket_expires_at: datetime


class TicketStore:
    def __init__(self, nc: NatsClient, ttl_seconds: float) -> None:
        self._js = nc.jetstream()
        self._ttl = ttl_seconds
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(subjects.WS_TICKETS_BUCKET)
            except (BucketNotFoundError, NotFoundError):
                self._kv = await self._js.create_key_value(
                    KeyValueConfig(
                        bucket=subjects.WS_TICKETS_BUCKET,
                        history=1,
                        ttl=BUCKET_MAX_AGE_SECONDS,
                        storage=StorageType.FILE,
                        description="single-use WebSocket tickets (SHA-256 of the ticket -> its holder)",
                    )
                )
        return self._kv

    async def issue(
        self, principal: Principal, credential_expires_at: datetime | None, issued: float | None
    ) -> tuple[str, TicketHolder]:
        """A fresh ticket standing for `principal` (as its access rule admitted it)."""
        holder = project(
            TicketHolder,
            principal,
            credential_expires_at=credential_expires_at,
            issued=issued,
            ticket_expires_at=datetime.now(UTC) + timedelta(seconds=self._ttl),
        )
        ticket = "wst_" + secrets.token_urlsafe(32)
        try:
            await (await self._bucket()).create(hash_token(ticket), holder.model_dump_json().encode())
        except NoStreamResponseError:
            # the bucket is gone (deleted, or a NATS that lost its store restarted): get-or-create it again
            self._kv = None
            await (await self._bucket()).create(hash_token(ticket), holder.model_dump_json().encode())
        return ticket, holder

    def principal(self, holder: TicketHolder) -> Principal:
        return Principal(
            actor=holder.actor, claims={}, kind=holder.kind, scopes=holder.scopes, plan=holder.plan
        )

    async def redeem(self, ticket: str) -> TicketHolder | None:
        """The holder, once: None for an unknown, used or expired ticket."""
        if not ticket.startswith("wst_") or len(ticket) > 128:
            return None
        kv = await self._bucket()
        key = hash_token(ticket)
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            return None
        if entry.value is None:
            return None
        try:
            await kv.delete(key, last=entry.revision)
        except Exception:  # another replica redeemed it first (the revision moved on)
            return None
        holder = TicketHolder.model_validate_json(entry.value)
        if holder.ticket_expires_at <= datetime.now(UTC):
            return None
        return holder
