"""The user-state cache on its own (an injected clock; the rpc client is a recorder, since what is tested is
the cache's bookkeeping, not auth): a change notice replaces one user's entry or forgets an organization's,
and without notices an entry is trusted at most the TTL."""

from __future__ import annotations

from typing import Any

from browserfleet_contracts.auth import UserChanged, UserState, UserStateRequest
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
