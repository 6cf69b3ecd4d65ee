"""Single sign-on through the gateway against the real auth and vault services and a local OpenID provider
(`OidcProvider`, the stand-in for the customer's IdP): the redirect dance driven by hand, just-in-time users
with the claim-to-role mapping, account linking, SSO-only with a break-glass admin, the settings' checks,
and every refusal (state, nonce, issuer, audience, expiry, unsigned or foreign-signed ID token, an email the
organization does not own, a provider's denial), each with a clear message and nothing created."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from browserfleet_devkit.oidc_provider import OidcProvider

from .identitystack import Headers, Stack, bearer, error_of, identity_stack


@dataclass
class Org:
    id: str
    slug: str
    admin: Headers
    client: httpx.AsyncClient


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
async def stack(nats_url: str, database_url: str) -> AsyncIterator[Stack]:
    async with identity_stack(nats_url, database_url) as s:
        yield s


async def configure(stack: Stack, idp: OidcProvider, **settings: Any) -> Org:
    client = await stack.gateway()
    org_id, slug, admin = await stack.new_org(client)
    secret = {"name": "IDP_SECRET", "value": idp.client_secret, "type": "sso_secret"}
    assert (await client.post("/api/v1/credentials", headers=admin, json=secret)).status_code in (200, 201)
    body = {
        "issuer": idp.issuer,
        "client_id": idp.client_id,
        "client_secret_name": "IDP_SECRET",
        "email_domains": [f"{slug}.example"],
        "role_claim": "groups",
        "role_mapping": {"fleet-admins": "admin", "fleet-viewers": "viewer"},
        **settings,
    }
    put = await client.put("/admin/sso", headers=admin, json=body)
    assert put.status_code == 200, put.text
    assert put.json()["login_path"] == f"/auth/sso/{slug}/login"
    return Org(org_id, slug, admin, client)


@pytest.fixture(scope="module")
async def org(stack: Stack, idp: OidcProvider) -> Org:
    return await configure(stack, idp)


@pytest.fixture(autouse=True)
def fresh_idp(idp: OidcProvider) -> Iterator[None]:
    yield
    idp.tamper, idp.deny = {}, None


async def callback(org: Org, idp: OidcProvider, user: dict[str, Any]) -> httpx.Response:
    """Browser: start at the gateway, sign in at the provider, come back to the callback."""
    idp.user = user
    start = await org.client.get(f"/auth/sso/{org.slug}/login")
    assert start.status_code == 302, start.text
    authorize = urlsplit(start.headers["location"])
    query = parse_qs(authorize.query)
    assert f"{authorize.scheme}://{authorize.netloc}" == idp.issuer
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["state"][0] and query["nonce"][0] and "openid" in query["scope"][0]
    assert query["redirect_uri"] == ["http://gw.test/auth/sso/callback"]
    async with httpx.AsyncClient() as browser:
        at_idp = await browser.get(start.headers["location"])
    assert at_idp.status_code == 302
    back = urlsplit(at_idp.headers["location"])
    return await org.client.get(f"{back.path}?{back.query}")


async def sign_in(org: Org, idp: OidcProvider, user: dict[str, Any]) -> dict[str, Any]:
    landed = await callback(org, idp, user)
    assert landed.status_code == 303, landed.text
    location = landed.headers["location"]
    assert location.startswith("/#sso_code=")  # in the fragment: never sent to a server, never logged
    exchanged = await org.client.post("/auth/sso/exchange", json={"code": location.split("=", 1)[1]})
    assert exchanged.status_code == 200, exchanged.text
    again = await org.client.post("/auth/sso/exchange", json={"code": location.split("=", 1)[1]})
    assert again.status_code == 401 and error_of(again)["code"] == "sso_code_invalid"  # single use
    body: dict[str, Any] = exchanged.json()
    return body


async def emails(org: Org) -> list[str]:
    return sorted(u["email"] for u in (await org.client.get("/admin/users", headers=org.admin)).json())


async def test_first_sign_in_creates_the_user_with_the_mapped_role_and_later_ones_follow_the_claim(
    stack: Stack, idp: OidcProvider, org: Org
) -> None:
    user = {"sub": "idp-ada", "email": f"Ada@{org.slug}.example", "name": "Ada", "groups": ["fleet-viewers"]}
    tokens = await sign_in(org, idp, user)
    me = await org.client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200 and me.json()["user"]["email"] == f"ada@{org.slug}.example"
    assert me.json()["role"] == "viewer"
    # the provider got the PKCE verifier and the client secret from the vault (it checked both)
    assert idp.token_requests[-1]["code_verifier"]
    # the same person again, now in the admins' group: the same user, promoted
    tokens = await sign_in(org, idp, {**user, "groups": ["fleet-admins", "fleet-viewers"]})
    me = await org.client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.json()["role"] == "admin"
    assert (await emails(org)).count(f"ada@{org.slug}.example") == 1
    # no mapping matched: the default role
    tokens = await sign_in(org, idp, {"sub": "idp-bob", "email": f"bob@{org.slug}.example"})
    assert (await org.client.get("/auth/me", headers=bearer(tokens["access_token"]))).json()["role"] == "user"


async def test_an_existing_user_is_linked_by_email(stack: Stack, idp: OidcProvider, org: Org) -> None:
    email = f"carol@{org.slug}.example"
    user_id = await stack.add_user(org.client, org.admin, email)
    tokens = await sign_in(org, idp, {"sub": "idp-carol", "email": email})
    me = await org.client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.json()["user"]["id"] == user_id
    # another identity at the provider cannot take the linked account over
    refused = await callback(org, idp, {"sub": "idp-mallory", "email": email})
    assert refused.status_code == 403 and error_of(refused)["code"] == "sso_identity_mismatch"


REFUSALS: list[tuple[str, dict[str, Any], int, str, str]] = [
    ("nonce", {"nonce": "a-nonce-from-another-sign-in"}, 401, "sso_id_token_invalid", "nonce"),
    ("issuer", {"iss": "https://evil.example"}, 401, "sso_id_token_invalid", "issuer"),
    ("audience", {"aud": "another-client"}, 401, "sso_id_token_invalid", "audience"),
    (
        "expired",
        {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
        401,
        "sso_id_token_invalid",
        "expired",
    ),
    ("unsigned", {"alg": "none"}, 401, "sso_id_token_invalid", "not signed with an accepted algorithm"),
    ("foreign key", {"foreign_key": True}, 401, "sso_id_token_invalid", "signature does not verify"),
    ("email unverified", {"email_verified": False}, 401, "sso_email_invalid", "not verified"),
]


@pytest.mark.parametrize(("case", "tamper", "status", "code", "says"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_a_bad_id_token_is_refused_with_a_clear_message_and_nothing_created(
    idp: OidcProvider, org: Org, case: str, tamper: dict[str, Any], status: int, code: str, says: str
) -> None:
    before = await emails(org)
    idp.tamper = tamper
    refused = await callback(
        org, idp, {"sub": f"idp-{case}", "email": f"{case.replace(' ', '-')}@{org.slug}.example"}
    )
    assert refused.status_code == status, refused.text
    assert error_of(refused)["code"] == code and says in error_of(refused)["message"], refused.text
    assert await emails(org) == before


async def test_emails_the_organization_does_not_own_are_refused(
    stack: Stack, idp: OidcProvider, org: Org
) -> None:
    before = await emails(org)
    outside = await callback(org, idp, {"sub": "idp-eve", "email": "eve@elsewhere.example"})
    assert outside.status_code == 403 and error_of(outside)["code"] == "sso_email_not_owned"
    assert "elsewhere.example" in error_of(outside)["message"]
    # an address in the org's domain that belongs to another organization's user
    _, _, other_admin = await stack.new_org(org.client)
    taken = f"dave@{org.slug}.example"
    await stack.add_user(org.client, other_admin, taken)
    clash = await callback(org, idp, {"sub": "idp-dave", "email": taken})
    assert clash.status_code == 403 and "another organization" in error_of(clash)["message"]
    assert await emails(org) == before


async def test_state_is_single_use_and_a_denial_is_reported(idp: OidcProvider, org: Org) -> None:
    before = await emails(org)
    unknown = await org.client.get("/auth/sso/callback?state=forged&code=whatever")
    assert unknown.status_code == 400 and error_of(unknown)["code"] == "sso_state_invalid"
    missing = await org.client.get("/auth/sso/callback?code=whatever")
    assert missing.status_code == 400 and error_of(missing)["code"] == "sso_state_invalid"
    idp.user = {"sub": "idp-erin", "email": f"erin@{org.slug}.example"}
    start = await org.client.get(f"/auth/sso/{org.slug}/login")
    async with httpx.AsyncClient() as browser:
        back = urlsplit((await browser.get(start.headers["location"])).headers["location"])
    first = await org.client.get(f"{back.path}?{back.query}")
    assert first.status_code == 303
    replay = await org.client.get(f"{back.path}?{back.query}")
    assert replay.status_code == 400 and error_of(replay)["code"] == "sso_state_invalid"
    idp.deny = "access_denied"
    denied = await callback(org, idp, {"sub": "idp-frank", "email": f"frank@{org.slug}.example"})
    assert denied.status_code == 401 and error_of(denied)["code"] == "sso_denied"
    assert "access_denied" in error_of(denied)["message"]
    assert await emails(org) == [*sorted([*before, f"erin@{org.slug}.example"])]
    nowhere = await org.client.get("/auth/sso/no-such-org/login")
    assert nowhere.status_code == 404 and error_of(nowhere)["code"] == "sso_not_configured"


async def test_settings_are_checked_and_sso_only_keeps_a_break_glass_admin(
    stack: Stack, idp: OidcProvider
) -> None:
    mine = await configure(stack, idp)
    base = (await mine.client.get("/admin/sso", headers=mine.admin)).json()
    assert "client_secret" not in base and base["client_secret_name"] == "IDP_SECRET"
    put = {k: v for k, v in base.items() if k not in ("org_id", "login_path", "updated_at")}

    async def attempt(**change: Any) -> httpx.Response:
        return await mine.client.put("/admin/sso", headers=mine.admin, json={**put, **change})

    nothing_there = await attempt(issuer=idp.issuer + "/other")
    assert nothing_there.status_code == 422 and error_of(nothing_there)["code"] == "sso_discovery_failed"
    # the discovery document must name the very issuer configured
    mismatch = await attempt(issuer=idp.issuer.replace("127.0.0.1", "localhost"))
    assert mismatch.status_code == 422 and error_of(mismatch)["code"] == "sso_discovery_mismatch"
    assert error_of(mismatch)["field"] == "issuer"
    no_secret = await attempt(client_secret_name="NOT_IN_VAULT")
    assert no_secret.status_code == 422 and error_of(no_secret)["field"] == "client_secret_name"
    # another organization's domain cannot be claimed
    other = await configure(stack, idp)
    taken = await attempt(email_domains=[f"{other.slug}.example"])
    assert taken.status_code == 409 and error_of(taken)["code"] == "sso_domain_taken"
    # SSO-only needs a break-glass admin, who keeps their password
    assert (await attempt(sso_only=True)).status_code == 422
    glass = f"admin@{mine.slug}.example"
    on = await attempt(sso_only=True, break_glass_email=glass.upper())
    assert on.status_code == 200 and on.json()["break_glass_email"] == glass
    member = f"gina@{mine.slug}.example"
    await stack.add_user(mine.client, mine.admin, member)
    refused = await mine.client.post(
        "/auth/login", json={"email": member, "password": stack.passwords[member]}
    )
    assert refused.status_code == 403 and error_of(refused)["code"] == "sso_required"
    assert f"/auth/sso/{mine.slug}/login" in error_of(refused)["message"]
    # a wrong password still says only "invalid email or password"
    wrong = await mine.client.post("/auth/login", json={"email": member, "password": "not-it"})
    assert wrong.status_code == 401 and error_of(wrong)["code"] == "invalid_credentials"
    assert (await stack.login(mine.client, glass)) != {}
    # ...and the member signs in through the provider
    tokens = await sign_in(mine, idp, {"sub": "idp-gina", "email": member})
    assert "access_token" in tokens
    assert (await mine.client.delete("/admin/sso", headers=mine.admin)).status_code == 204
    assert (await stack.login(mine.client, member)) != {}
