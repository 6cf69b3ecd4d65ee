"""Verified API keys, cached per replica."""

from __future__ import annotations

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
    the TTL bounds the damage of a missed broadcast, and a key's own expiry is checked on every request."""

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

    async def authenticate(self, rpc: RpcClient, raw: str) -> ApiKeyPrincipal:
        digest = hash_token(raw)
        hit = self._entries.get(digest)
        now = self._clock()
        if hit is not None and hit[1] > now:
            principal = hit[0]
        else:
            principal = await rpc.call(
                endpoints.Auth.AUTHENTICATE_API_KEY, AuthenticateApiKeyRequest(key=raw)
            )
            if self.ttl > 0:
                if len(self._entries) > 10_000:
                    self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
                self._entries[digest] = (principal, now + self.ttl)
        if principal.expires_at is not None and principal.expires_at <= self._wall():
            self._entries.pop(digest, None)
            raise Unauthorized("invalid, revoked or expired API key", code="invalid_api_key")
        return principal

    def revoke(self, key_id: str) -> None:
        self._entries = {k: v for k, v in self._entries.items() if v[0].key_id != key_id}

    async def subscribe(self, nc: NatsClient) -> None:
        await notices.follow(
            nc,
            subjects.API_KEY_REVOKED,
            ApiKeyRevoked,
            lambda notice: self.revoke(notice.key_id),
            malformed="API key revocation",
        )
