"""The API-key cache on its own (an injected clock; the rpc client is a recorder, since what is tested is the
cache's bookkeeping, not auth): requests that miss together share one call, and a revocation that comes while
a call is out wins over its answer."""

from __future__ import annotations

import asyncio
from typing import Any

from browserfleet_contracts.auth import ApiKeyPrincipal, AuthenticateApiKeyRequest
from browserfleet_gateway.keycache import ApiKeyCache

from .conftest import Clock

KEY = "sk_api_test_key"


class SlowAuth:
    """Answers `svc.auth.authenticate_api_key` once `release` is set, and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def call(self, endpoint: Any, req: AuthenticateApiKeyRequest) -> ApiKeyPrincipal:
        self.calls += 1
        await self.release.wait()
        return ApiKeyPrincipal(org_id="o1", key_id="k1", scopes=["tasks:read"], plan="free", expires_at=None)


async def _started(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_requests_that_miss_together_share_one_call() -> None:
    clock, auth = Clock(100.0), SlowAuth()
    cache = ApiKeyCache(1.0, clock=clock)
    gets = [asyncio.ensure_future(cache.authenticate(auth, KEY)) for _ in range(20)]  # type: ignore[arg-type]
    await _started()
    gets.pop().cancel()  # a waiter that goes away does not take the call from the others
    auth.release.set()
    assert {p.key_id for p in await asyncio.gather(*gets)} == {"k1"}
    assert auth.calls == 1
    await cache.authenticate(auth, KEY)  # type: ignore[arg-type]
    assert auth.calls == 1
    clock.t += 1.1
    await cache.authenticate(auth, KEY)  # type: ignore[arg-type]
    assert auth.calls == 2


async def test_a_revocation_during_a_call_wins_over_its_answer() -> None:
    clock, auth = Clock(100.0), SlowAuth()
    cache = ApiKeyCache(1.0, clock=clock)
    before = asyncio.ensure_future(cache.authenticate(auth, KEY))  # type: ignore[arg-type]
    await _started()
    cache.revoke("k1")
    auth.release.set()
    await before  # the request that asked before the revocation gets its answer...
    await cache.authenticate(auth, KEY)  # type: ignore[arg-type]
    assert auth.calls == 2  # ...which is not kept: the next request asks auth
    # a request after a revocation does not join a call that was out when it came
    clock.t += 1.1
    auth.release.clear()
    before = asyncio.ensure_future(cache.authenticate(auth, KEY))  # type: ignore[arg-type]
    await _started()
    cache.revoke("k1")
    after = asyncio.ensure_future(cache.authenticate(auth, KEY))  # type: ignore[arg-type]
    await _started()
    auth.release.set()
    await asyncio.gather(before, after)
    assert auth.calls == 4
