"""What an access token cannot say once it is signed, cached per replica: whether its user is still active,
their role now, the time before which their tokens stop counting, and whether MFA applies to them.

A deactivation, a role change or an MFA reset commits in auth, which then broadcasts the user's new state on
`auth.user.changed` (core NATS, no queue group): every replica replaces its entry at once, so the change
holds from the next request on. The TTL (USER_STATE_CACHE_SECONDS) bounds the damage of a missed
broadcast; an unknown user costs auth one `svc.auth.user_state` call per replica per TTL.

Requests that miss together share one call: when a busy user's entry expired, every request in hand and every
one arriving until auth answered made its own call, and under a read load that was a queue of hundreds at
auth every TTL (requests held up to seconds: the read benchmark's p99). A notice that arrives while a call is
out wins over its answer, which may predate the change: the answer then serves only the requests that were
waiting for it (as it did before) and is not kept, and a request from then on asks again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.auth import UserChanged, UserState, UserStateRequest
from browserfleet_core.messaging import RpcClient
from nats.aio.client import Client as NatsClient

from . import notices

MAX_ENTRIES = 50_000


class UserStateCache:
    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[UserState, float]] = {}
        self._calls: dict[tuple[str, str], asyncio.Future[UserState]] = {}
        self._notices = 0  # change notices so far: a call's answer is kept only if none came while it was out

    async def get(self, rpc: RpcClient, org_id: str, user_id: str) -> UserState:
        now = self._clock()
        hit = self._entries.get(user_id)
        if hit is not None and hit[1] > now and hit[0].org_id == org_id:
            return hit[0]
        if self.ttl <= 0:  # nothing is trusted without a call of its own
            return await self._ask(rpc, org_id, user_id, now)
        key = (org_id, user_id)
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = asyncio.ensure_future(self._ask(rpc, org_id, user_id, now))
            call.add_done_callback(lambda done: self._finished(key, done))
        # shielded: a waiter that goes away (its client left) does not cancel the call the others wait for
        return await asyncio.shield(call)

    async def _ask(self, rpc: RpcClient, org_id: str, user_id: str, now: float) -> UserState:
        notices = self._notices
        state = await rpc.call(endpoints.Auth.USER_STATE, UserStateRequest(user_id=user_id, org_id=org_id))
        if self._notices == notices:
            self._put(state, now)
        return state

    def _finished(self, key: tuple[str, str], done: asyncio.Future[UserState]) -> None:
        if self._calls.get(key) is done:
            del self._calls[key]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone, and each that stayed got it anyway

    def _put(self, state: UserState, now: float) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
        self._entries[state.user_id] = (state, now + self.ttl)

    def changed(self, notice: UserChanged) -> None:
        self._notices += 1
        self._calls.clear()  # a request from now on does not join a call that may predate the change
        if notice.state is not None:
            self._entries.pop(notice.state.user_id, None)
            self._put(notice.state, self._clock())
        else:  # an org-wide change: forget the org's users, each asks again on its next request
            self._entries = {k: v for k, v in self._entries.items() if v[0].org_id != notice.org_id}

    async def subscribe(self, nc: NatsClient) -> None:
        await notices.follow(
            nc, subjects.USER_CHANGED, UserChanged, self.changed, malformed="user change notice"
        )
