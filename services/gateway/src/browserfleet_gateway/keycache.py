"""Verified API keys, cached per replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.auth import ApiKeyPrincipal, ApiKeyRevoked, AuthenticateApiKeyRequest
from browserfleet_core.errors import Unauthorized
from browserfleet_core.messaging import RpcClient
from browserfleet_core.security import hash_token
from nats.aio.client import Client as NatsClient

from . import notices


class ApiKeyCache:
    """Verified API keys, kept `ttl` seconds (monotonic clock) so a key costs auth one call per replica per
    `ttl`. A revocation reaches every replica at once on `auth.api_key.revoked` (core NATS, no queue group);
    the TTL bounds the damage of a missed broadcast, and a key's own expiry is checked on every request.

    Requests that miss together share one call (as `userstate.UserStateCache` does, and for the same reason:
    one call per request at each expiry queued hundreds at auth under load); a revocation that arrives while
    a call is out wins over its answer, which is then not kept."""

    def __init__(
        self,
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._wall = wall
        self._entries: dict[str, tuple[ApiKeyPrincipal, float]] = {}
        self._calls: dict[str, asyncio.Future[ApiKeyPrincipal]] = {}
        self._notices = 0  # revocations so far: a call's answer is kept only if none came while it was out

    async def authenticate(self, rpc: RpcClient, raw: str) -> ApiKeyPrincipal:
        digest = hash_token(raw)
        hit = self._entries.get(digest)
        now = self._clock()
        if hit is not None and hit[1] > now:
            principal = hit[0]
        elif self.ttl <= 0:  # nothing is trusted without a call of its own
            principal = await self._ask(rpc, raw, digest, now)
        else:
            call = self._calls.get(digest)
            if call is None:
                call = self._calls[digest] = asyncio.ensure_future(self._ask(rpc, raw, digest, now))
                call.add_done_callback(lambda done: self._finished(digest, done))
            # shielded: a waiter that goes away does not cancel the call the others wait for
            principal = await asyncio.shield(call)
        if principal.expires_at is not None and principal.expires_at <= self._wall():
            self._entries.pop(digest, None)
            raise Unauthorized("invalid, revoked or expired API key", code="invalid_api_key")
        return principal

    async def _ask(self, rpc: RpcClient, raw: str, digest: str, now: float) -> ApiKeyPrincipal:
        notices = self._notices
        principal: ApiKeyPrincipal = await rpc.call(
            endpoints.Auth.AUTHENTICATE_API_KEY, AuthenticateApiKeyRequest(key=raw)
        )
        if self.ttl > 0 and self._notices == notices:
            if len(self._entries) > 10_000:
                self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            self._entries[digest] = (principal, now + self.ttl)
        return principal

    def _finished(self, digest: str, done: asyncio.Future[ApiKeyPrincipal]) -> None:
        if self._calls.get(digest) is done:
            del self._calls[digest]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone, and each that stayed got it anyway

    def revoke(self, key_id: str) -> None:
        self._notices += 1
        self._calls.clear()  # a request from now on does not join a call that may predate the revocation
        self._entries = {k: v for k, v in self._entries.items() if v[0].key_id != key_id}

    async def subscribe(self, nc: NatsClient) -> None:
        await notices.follow(
            nc,
            subjects.API_KEY_REVOKED,
            ApiKeyRevoked,
            lambda notice: self.revoke(notice.key_id),
            malformed="API key revocation",
        )
