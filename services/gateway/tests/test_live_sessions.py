"""Deactivation and role changes hold from the next request on every gateway replica, not when the access
token expires: two replicas against the real auth service, their user-state caches set to keep entries ten
minutes, so only auth's `auth.user.changed` broadcast can make the second one notice in time. (API key
revocation across replicas: test_identity.py.) The broadcast is asynchronous: the tests poll, and never
assert on elapsed time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from .identitystack import Headers, Stack, bearer, error_of, identity_stack

LONG = {"user_state_cache_seconds": 600, "api_key_cache_seconds": 600}


@pytest.fixture(scope="module")
async def stack(nats_url: str, database_url: str) -> AsyncIterator[Stack]:
    # the wall clock: a deactivation's valid-after is compared with access tokens' wall-clock `iat`
    async with identity_stack(nats_url, database_url, flowing_clock=True) as s:
        yield s


async def until(probe: Callable[[], Awaitable[httpx.Response]], status: int) -> httpx.Response:
    for _ in range(400):
        resp = await probe()
        if resp.status_code == status:
            return resp
        await asyncio.sleep(0.005)
    return resp


async def test_role_changes_and_deactivation_hold_at_the_next_request_on_every_replica(stack: Stack) -> None:
    one, two = await stack.gateway(**LONG), await stack.gateway(**LONG)
    _, slug, admin = await stack.new_org(one)
    email = f"member@{slug}.example"
    member_id = await stack.add_user(one, admin, email, role="user")
    signed = await one.post("/auth/login", json={"email": email, "password": stack.passwords[email]})
    member: Headers = bearer(signed.json()["access_token"])
    refresh = signed.json()["refresh_token"]

    def write(client: httpx.AsyncClient, headers: Headers) -> Callable[[], Awaitable[httpx.Response]]:
        body = {"name": "SITE_PW", "value": "v"}
        return lambda: client.post("/api/v1/credentials", headers=headers, json=body)

    for client in (one, two):  # both replicas now hold the member's state
        assert (await write(client, member)()).status_code == 201

    # demoted on replica one: replica two refuses the writer's token at once
    demote = await one.patch(f"/admin/users/{member_id}", headers=admin, json={"role": "viewer"})
    assert demote.status_code == 200, demote.text
    denied = await until(write(two, member), 403)
    assert denied.status_code == 403 and error_of(denied)["code"] == "insufficient_role"
    assert (await two.get("/api/v1/org/policy", headers=member)).status_code == 200  # still a viewer

    # promoted: the old token never grants more than it says (a user's), the next one does
    promote = await one.patch(f"/admin/users/{member_id}", headers=admin, json={"role": "admin"})
    assert promote.status_code == 200
    assert (await until(write(two, member), 201)).status_code == 201
    assert (await two.get("/admin/users", headers=member)).status_code == 403
    renewed = await two.post("/auth/refresh", json={"refresh_token": refresh})
    assert renewed.status_code == 200, renewed.text
    assert (await two.get("/admin/users", headers=bearer(renewed.json()["access_token"]))).status_code == 200
    member = bearer(renewed.json()["access_token"])

    # deactivated on replica one: replica two refuses the token at once (it would be valid 15 more minutes)
    off = await one.delete(f"/admin/users/{member_id}", headers=admin)
    assert off.status_code == 200 and off.json()["is_active"] is False
    gone = await until(lambda: two.get("/api/v1/org/policy", headers=member), 401)
    assert gone.status_code == 401 and error_of(gone)["code"] == "invalid_principal"
    assert (await one.get("/api/v1/org/policy", headers=member)).status_code == 401
    # reactivated: the old token stays dead (issued before the deactivation); a new sign-in works
    on = await one.patch(f"/admin/users/{member_id}", headers=admin, json={"is_active": True})
    assert on.status_code == 200
    stale = await until(lambda: two.get("/api/v1/org/policy", headers=member), 401)
    assert stale.status_code == 401 and error_of(stale)["code"] in ("token_revoked", "invalid_principal")
    fresh = await stack.login(two, email)
    assert (await until(lambda: two.get("/api/v1/org/policy", headers=fresh), 200)).status_code == 200
