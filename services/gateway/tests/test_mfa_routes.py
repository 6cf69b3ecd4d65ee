"""TOTP MFA through the gateway against the real auth service: enrolment (QR, recovery codes), the sign-in
challenge, a reused or stale code refused, wrong codes throttled like passwords, recovery codes single use,
the organization's requirement (enrolment during sign-in), and sensitive actions needing a recent factor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pyotp
import pytest
from browserfleet_auth.mfa import STEP_SECONDS, totp_code

from .identitystack import Headers, Stack, bearer, error_of, identity_stack

pytestmark = pytest.mark.usefixtures("stack")


@pytest.fixture(scope="module")
async def stack(nats_url: str, database_url: str) -> AsyncIterator[Stack]:
    async with identity_stack(nats_url, database_url) as s:
        yield s


def code(stack: Stack, secret: str, steps: int = 0) -> str:
    return totp_code(secret, stack.clock.now + timedelta(seconds=steps * STEP_SECONDS))


async def enrolled(
    stack: Stack, client: httpx.AsyncClient, headers: Headers
) -> tuple[str, list[str], Headers]:
    """(secret, recovery codes, headers of the fresh MFA tokens) for the signed-in user of `headers`."""
    start = await client.post("/auth/mfa/totp", headers=headers)
    assert start.status_code == 200, start.text
    body = start.json()
    assert body["otpauth_uri"].startswith("otpauth://totp/") and "secret=" in body["otpauth_uri"]
    assert body["qr_svg"].lstrip().startswith("<svg") and len(body["recovery_codes"]) == 10
    assert pyotp.parse_uri(body["otpauth_uri"]).secret == body["secret"]
    done = await client.post(
        "/auth/mfa/totp/confirm", headers=headers, json={"code": code(stack, body["secret"])}
    )
    assert done.status_code == 200, done.text
    stack.clock.advance(STEP_SECONDS)  # the confirming code's step is spent
    return body["secret"], body["recovery_codes"], bearer(done.json()["access_token"])


async def enrolled_user(stack: Stack, name: str) -> tuple[httpx.AsyncClient, str, str, list[str]]:
    """A gateway client and a user `name@` of a new organization who enrolled a factor: (client, email,
    secret, recovery codes)."""
    client = await stack.gateway()
    _, slug, admin = await stack.new_org(client)
    email = f"{name}@{slug}.example"
    await stack.add_user(client, admin, email)
    secret, recovery, _ = await enrolled(stack, client, await stack.login(client, email))
    return client, email, secret, recovery


async def password_login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    resp = await client.post("/auth/login", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_enrol_then_sign_in_with_a_code_once(stack: Stack) -> None:
    client = await stack.gateway()
    _, slug, admin = await stack.new_org(client)
    email = f"viewer@{slug}.example"
    await stack.add_user(client, admin, email, role="viewer")
    viewer = await stack.login(client, email)
    # a viewer may set up their own factor (it changes nothing of the organization's)
    secret, _, _ = await enrolled(stack, client, viewer)
    assert (await client.get("/auth/mfa", headers=viewer)).json()["enrolled"] is True

    first = await password_login(client, email, stack.passwords[email])
    assert first["mfa_required"] is True and "access_token" not in first
    assert first["enrolment_required"] is False
    now_code = code(stack, secret)
    ok = await client.post("/auth/mfa/verify", json={"challenge": first["challenge"], "code": now_code})
    assert ok.status_code == 200, ok.text
    me = await client.get("/auth/me", headers=bearer(ok.json()["access_token"]))
    assert me.status_code == 200 and me.json()["user"]["email"] == email
    # the challenge is spent
    again = await client.post("/auth/mfa/verify", json={"challenge": first["challenge"], "code": now_code})
    assert again.status_code == 401 and error_of(again)["code"] == "invalid_mfa_challenge"

    # the same code (same time step) on a new sign-in: refused as reused
    second = await password_login(client, email, stack.passwords[email])
    reused = await client.post("/auth/mfa/verify", json={"challenge": second["challenge"], "code": now_code})
    assert reused.status_code == 401
    assert error_of(reused)["code"] == "invalid_mfa_code" and "already used" in error_of(reused)["message"]
    # a code from five steps ago: refused as expired
    stale = await client.post(
        "/auth/mfa/verify", json={"challenge": second["challenge"], "code": code(stack, secret, -5)}
    )
    assert stale.status_code == 401 and "expired" in error_of(stale)["message"]
    wrong = await client.post("/auth/mfa/verify", json={"challenge": second["challenge"], "code": "000000"})
    assert wrong.status_code == 401 and error_of(wrong)["field"] == "code"
    # the next step's code works (one step of drift either way is allowed)
    stack.clock.advance(STEP_SECONDS)
    ok = await client.post(
        "/auth/mfa/verify", json={"challenge": second["challenge"], "code": code(stack, secret)}
    )
    assert ok.status_code == 200, ok.text


async def test_recovery_codes_work_once(stack: Stack) -> None:
    client, email, _, recovery = await enrolled_user(stack, "r")
    used = recovery[0].upper().replace("-", " ")  # spelled loosely: case and separators do not matter
    first = await password_login(client, email, stack.passwords[email])
    ok = await client.post("/auth/mfa/verify", json={"challenge": first["challenge"], "code": used})
    assert ok.status_code == 200, ok.text
    status = await client.get("/auth/mfa", headers=bearer(ok.json()["access_token"]))
    assert status.json()["recovery_codes_left"] == 9
    second = await password_login(client, email, stack.passwords[email])
    again = await client.post(
        "/auth/mfa/verify", json={"challenge": second["challenge"], "code": recovery[0]}
    )
    assert again.status_code == 401 and "already used" in error_of(again)["message"]


async def test_wrong_codes_are_throttled_like_passwords(stack: Stack) -> None:
    client, email, secret, _ = await enrolled_user(stack, "t")
    challenge = (await password_login(client, email, stack.passwords[email]))["challenge"]
    statuses = []
    for _ in range(5):
        resp = await client.post("/auth/mfa/verify", json={"challenge": challenge, "code": "123456"})
        statuses.append(resp.status_code)
    # after the policy's free failures each retry must wait: 429 even for the right code
    assert statuses[:3] == [401, 401, 401] and 429 in statuses[3:]
    right = await client.post("/auth/mfa/verify", json={"challenge": challenge, "code": code(stack, secret)})
    assert right.status_code == 429 and error_of(right)["code"] == "login_throttled"
    assert "retry-after" in right.headers
    stack.clock.advance(3600)  # the window passes (and a fresh challenge is needed: the old one expired)
    challenge = (await password_login(client, email, stack.passwords[email]))["challenge"]
    right = await client.post("/auth/mfa/verify", json={"challenge": challenge, "code": code(stack, secret)})
    assert right.status_code == 200, right.text


async def test_org_requirement_enrols_at_sign_in_and_sensitive_actions_need_a_recent_factor(
    stack: Stack,
) -> None:
    client = await stack.gateway()
    _, slug, admin = await stack.new_org(client)
    admin_email = f"admin@{slug}.example"
    before = await password_login(client, admin_email, stack.passwords[admin_email])
    email = f"m@{slug}.example"
    await stack.add_user(client, admin, email)
    # no factor applies yet: a sensitive action needs none
    key = await client.post("/admin/api-keys", headers=admin, json={"name": "k", "scopes": ["tasks:read"]})
    assert key.status_code == 201, key.text
    assert (await client.put("/admin/mfa-policy", headers=admin, json={"required": True})).json() == {
        "required": True
    }
    # the requirement holds from the next request (once the change notice is in): the admin's token has no
    # second factor. Poll, never assert on elapsed time.
    for _ in range(200):
        denied = await client.post(
            "/admin/api-keys", headers=admin, json={"name": "k2", "scopes": ["tasks:read"]}
        )
        if denied.status_code == 403:
            break
        await asyncio.sleep(0.005)
    assert denied.status_code == 403 and error_of(denied)["code"] == "mfa_step_up_required"
    # nor can a refresh token of a sign-in without the factor mint new tokens
    refreshed = await client.post("/auth/refresh", json={"refresh_token": before["refresh_token"]})
    assert refreshed.status_code == 401 and error_of(refreshed)["code"] == "mfa_required"
    # ...and a member without a factor enrols during sign-in
    first = await password_login(client, email, stack.passwords[email])
    assert first["mfa_required"] is True and first["enrolment_required"] is True
    assert (
        await client.post("/auth/mfa/verify", json={"challenge": first["challenge"], "code": "123456"})
    ).status_code == 401
    enrol = await client.post("/auth/mfa/enrol", json={"challenge": first["challenge"]})
    assert enrol.status_code == 200, enrol.text
    ok = await client.post(
        "/auth/mfa/verify",
        json={"challenge": first["challenge"], "code": code(stack, enrol.json()["secret"])},
    )
    assert ok.status_code == 200, ok.text
    assert (await client.get("/auth/mfa", headers=bearer(ok.json()["access_token"]))).json()[
        "enrolled"
    ] is True

    # the admin enrols at their next sign-in too
    first = await password_login(client, admin_email, stack.passwords[admin_email])
    enrol = await client.post("/auth/mfa/enrol", json={"challenge": first["challenge"]})
    secret = enrol.json()["secret"]
    signed = await client.post(
        "/auth/mfa/verify", json={"challenge": first["challenge"], "code": code(stack, secret)}
    )
    mfa_admin = bearer(signed.json()["access_token"])
    created = await client.post(
        "/admin/api-keys", headers=mfa_admin, json={"name": "k3", "scopes": ["tasks:read"]}
    )
    assert created.status_code == 201, created.text
    # a step-up renews the factor; a code of the step already used is refused
    stale = await client.post("/auth/mfa/step-up", headers=mfa_admin, json={"code": code(stack, secret)})
    assert stale.status_code == 401 and "already used" in error_of(stale)["message"]
    stack.clock.advance(STEP_SECONDS)
    fresh = await client.post("/auth/mfa/step-up", headers=mfa_admin, json={"code": code(stack, secret)})
    assert fresh.status_code == 200, fresh.text
    # an admin resets a member's factor: their tokens stop at the next request
    member = bearer(ok.json()["access_token"])
    users = (await client.get("/admin/users", headers=mfa_admin)).json()
    member_id = next(u["id"] for u in users if u["email"] == email)
    reset = await client.delete(f"/admin/users/{member_id}/mfa", headers=bearer(fresh.json()["access_token"]))
    assert reset.status_code == 204, reset.text
    gone = await client.get("/auth/me", headers=member)
    assert gone.status_code == 401 and error_of(gone)["code"] == "token_revoked"
    # switching the requirement off is itself sensitive, and an API key may not touch MFA at all
    assert (await client.put("/admin/mfa-policy", headers=admin, json={"required": False})).status_code == 403
    keyed = await client.post("/auth/mfa/totp", headers=bearer(key.json()["key"]))
    assert keyed.status_code == 403
