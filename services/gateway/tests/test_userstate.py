"""The user-state cache on its own (an injected clock; the rpc client is a recorder, since what is tested is
the cache's bookkeeping, not auth): a change notice replaces one user's entry or forgets an organization's,
and without notices an entry is trusted at most the TTL; requests that miss together share one call, and a
notice that comes while a call is out wins over its answer."""

from __future__ import annotations

import asyncio
from typing import Any

from browserfleet_contracts.auth import UserChanged, UserState, UserStateRequest
from browserfleet_core.errors import Unavailable
from browserfleet_gateway.userstate import UserStateCache

from .conftest import Clock


class Auth:
    """Answers `svc.auth.user_state` from a dict and counts the calls."""

    def __init__(self) -> None:
        self.states: dict[str, UserState] = {}
        self.calls = 0

    async def call(self, endpoint: Any, req: UserStateRequest) -> UserState:
        self.calls += 1
        return self.states[req.user_id]


def state(user: str, org: str = "o1", **kw: Any) -> UserState:
    return UserState.model_validate({"user_id": user, "org_id": org, "active": True, "role": "admin", **kw})


async def test_entries_live_the_ttl_and_notices_replace_or_forget_them() -> None:
    clock, auth = Clock(100.0), Auth()
    cache = UserStateCache(5.0, clock=clock)
    auth.states = {"u1": state("u1"), "u2": state("u2"), "u3": state("u3", org="o2")}
    for user, org in (("u1", "o1"), ("u2", "o1"), ("u3", "o2")):
        await cache.get(auth, org, user)  # type: ignore[arg-type]
    assert auth.calls == 3
    # within the TTL: no call, even though auth's truth changed (only a notice or the TTL brings it)
    auth.states["u1"] = state("u1", role="viewer")
    assert (await cache.get(auth, "o1", "u1")).role == "admin"  # type: ignore[arg-type]
    clock.t += 5.1
    assert (await cache.get(auth, "o1", "u1")).role == "viewer"  # type: ignore[arg-type]
    await cache.get(auth, "o2", "u3")  # type: ignore[arg-type]
    assert auth.calls == 5
    # a notice for one user replaces their entry at once, without a call
    cache.changed(UserChanged(org_id="o1", state=state("u2", active=False)))
    assert (await cache.get(auth, "o1", "u2")).active is False  # type: ignore[arg-type]
    assert auth.calls == 5
    # an org-wide notice forgets that org's users only
    cache.changed(UserChanged(org_id="o1"))
    await cache.get(auth, "o2", "u3")  # type: ignore[arg-type]
    assert auth.calls == 5
    await cache.get(auth, "o1", "u1")  # type: ignore[arg-type]
    assert auth.calls == 6
    # an entry never answers for another org's claim of the same user id
    auth.states["u3"] = state("u3", org="o1", active=False)
    assert (await cache.get(auth, "o1", "u3")).active is False  # type: ignore[arg-type]


class SlowAuth(Auth):
    """`Auth` whose answers wait for `release` (the state answered is the one held when the call came)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def call(self, endpoint: Any, req: UserStateRequest) -> UserState:
        self.calls += 1
        answer = self.states[req.user_id]
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return answer


async def _started(n: int = 3) -> None:
    for _ in range(n):  # let the gets reach their call
        await asyncio.sleep(0)


async def test_requests_that_miss_together_share_one_call() -> None:
    clock, auth = Clock(100.0), SlowAuth()
    cache = UserStateCache(5.0, clock=clock)
    auth.states = {"u1": state("u1")}
    gets = [asyncio.ensure_future(cache.get(auth, "o1", "u1")) for _ in range(20)]  # type: ignore[arg-type]
    await _started()
    leaver = gets.pop()
    leaver.cancel()  # a waiter that goes away does not take the call from the others
    auth.release.set()
    assert [s.role for s in await asyncio.gather(*gets)] == ["admin"] * 19
    assert auth.calls == 1
    await cache.get(auth, "o1", "u1")  # type: ignore[arg-type]
    assert auth.calls == 1  # and its answer is the entry
    # at expiry, again one call for all
    clock.t += 5.1
    auth.release.clear()
    gets = [asyncio.ensure_future(cache.get(auth, "o1", "u1")) for _ in range(5)]  # type: ignore[arg-type]
    await _started()
    auth.release.set()
    await asyncio.gather(*gets)
    assert auth.calls == 2


async def test_a_failed_call_fails_its_waiters_and_the_next_request_asks_again() -> None:
    clock, auth = Clock(100.0), SlowAuth()
    cache = UserStateCache(5.0, clock=clock)
    auth.states = {"u1": state("u1")}
    auth.fail = Unavailable("auth is away", code="service_unavailable")
    gets = [asyncio.ensure_future(cache.get(auth, "o1", "u1")) for _ in range(3)]  # type: ignore[arg-type]
    await _started()
    auth.release.set()
    results = await asyncio.gather(*gets, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results) and auth.calls == 1
    auth.fail = None
    assert (await cache.get(auth, "o1", "u1")).active is True  # type: ignore[arg-type]
    assert auth.calls == 2


async def test_a_notice_during_a_call_wins_over_its_answer() -> None:
    clock, auth = Clock(100.0), SlowAuth()
    cache = UserStateCache(5.0, clock=clock)
    auth.states = {"u1": state("u1"), "u2": state("u2")}
    waiting = asyncio.ensure_future(cache.get(auth, "o1", "u1"))  # type: ignore[arg-type]
    await _started()
    # the user is deactivated while auth's answer (taken before) is on its way
    cache.changed(UserChanged(org_id="o1", state=state("u1", active=False)))
    auth.release.set()
    assert (await waiting).active is True  # the request that asked before the change gets its answer...
    assert (await cache.get(auth, "o1", "u1")).active is False  # type: ignore[arg-type]
    assert auth.calls == 1  # ...but the entry stays the notice's
    # an org-wide change while a call is out: a request after it does not join that call, nor is it kept
    clock.t += 5.1
    auth.release.clear()
    before = asyncio.ensure_future(cache.get(auth, "o1", "u2"))  # type: ignore[arg-type]
    await _started()
    cache.changed(UserChanged(org_id="o1"))
    auth.states["u2"] = state("u2", role="viewer")
    after = asyncio.ensure_future(cache.get(auth, "o1", "u2"))  # type: ignore[arg-type]
    await _started()
    auth.release.set()
    assert ((await before).role, (await after).role) == ("admin", "viewer")
    assert auth.calls == 3
    assert (await cache.get(auth, "o1", "u2")).role == "viewer"  # type: ignore[arg-type]
    assert auth.calls == 3
