"""One email rule at every door (`browserfleet_contracts.auth.normalize_email`), tested with one table of
addresses: an admin creating a user, an admin inviting one, an operator naming an organization's first admin,
signing in, and an identity provider asserting the address at SSO. What one door accepts, every door accepts
(and spells the same); what one refuses, every door refuses with a 4xx naming the field, creating nothing.
Before, `x@example.test` got a 201 at creation and could never sign in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from browserfleet_devkit.oidc_provider import OidcProvider

from .identitystack import Stack, error_of, identity_stack

# (as typed, as stored): accepted everywhere
VALID = [
    ("x@example.test", "x@example.test"),
    ("Admin.Person@Example.COM", "admin.person@example.com"),
    ("\uff57\uff49\uff44\uff45@fullwidth.example", "wide@fullwidth.example"),  # full-width letters fold
    ("ops@host.local", "ops@host.local"),
    ("j\u00fcrgen@ex\u00e4mple.com", "j\u00fcrgen@ex\u00e4mple.com"),
    ("  padded@example.com ", "padded@example.com"),
]
# refused everywhere
INVALID = [
    "no-at-sign",
    "a@",
    "@example.com",
    "a@b@example.com",
    "a b@example.com",
    "a@localhost",
    "a@nodot",
    "a@x.invalid",
    '"quoted"@example.com',
    "a@[127.0.0.1]",
    "a.@example.com",
    "nul\x00@example.com",
]
DOMAINS = ["example.test", "example.com", "fullwidth.example", "host.local", "ex\u00e4mple.com"]
PASSWORD = "a long enough password"


def tagged(address: str, tag: str) -> str:
    """The same address with `tag` in front of its local part: each door needs an account of its own."""
    return tag + address.strip()


@pytest.fixture(scope="module")
async def stack(nats_url: str, database_url: str) -> AsyncIterator[Stack]:
    async with identity_stack(nats_url, database_url) as s:
        yield s


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


async def test_one_table_of_addresses_at_every_door(stack: Stack, idp: OidcProvider) -> None:
    client = await stack.gateway()
    _, slug, admin = await stack.new_org(client)
    secret = {"name": "IDP_SECRET", "value": idp.client_secret, "type": "sso_secret"}
    assert (await client.post("/api/v1/credentials", headers=admin, json=secret)).status_code == 201
    sso = {
        "issuer": idp.issuer,
        "client_id": idp.client_id,
        "client_secret_name": "IDP_SECRET",
        "email_domains": DOMAINS,
    }
    assert (await client.put("/admin/sso", headers=admin, json=sso)).status_code == 200

    async def users() -> list[str]:
        return sorted(u["email"] for u in (await client.get("/admin/users", headers=admin)).json())

    async def sso_door(email: str) -> httpx.Response:
        idp.user = {"sub": f"sub-{len(await users())}-{hash(email)}", "email": email}
        start = await client.get(f"/auth/sso/{slug}/login")
        async with httpx.AsyncClient() as browser:
            back = urlsplit((await browser.get(start.headers["location"])).headers["location"])
        return await client.get(f"{back.path}?{back.query}")

    operator = await stack.operator_headers(client)
    for index, (typed, stored) in enumerate(VALID):
        # creation (with a password) and sign-in in the spelling typed
        made = await client.post("/admin/users", headers=admin, json={"email": typed, "password": PASSWORD})
        assert made.status_code == 201 and made.json()["email"] == stored, (typed, made.text)
        signed = await client.post("/auth/login", json={"email": typed, "password": PASSWORD})
        assert signed.status_code == 200 and "access_token" in signed.json(), (typed, signed.text)
        # invitation
        invited = await client.post("/admin/users", headers=admin, json={"email": tagged(typed, "inv")})
        assert invited.status_code == 201 and invited.json()["email"] == tagged(stored, "inv"), invited.text
        # an organization's first admin, named by the operator
        org = await client.post(
            "/organizations",
            headers=operator,
            json={"name": f"email rule {index}", "admin_email": tagged(typed, "first")},
        )
        assert org.status_code == 201 and org.json()["admin_email"] == tagged(stored, "first"), org.text
        # SSO: the identity provider asserts the address
        landed = await sso_door(tagged(typed, "sso"))
        assert landed.status_code == 303, (typed, landed.text)
        assert tagged(stored, "sso") in await users()

    before = await users()
    for address in INVALID:
        made = await client.post("/admin/users", headers=admin, json={"email": address, "password": PASSWORD})
        assert made.status_code == 422 and error_of(made)["field"] == "email", (address, made.text)
        invited = await client.post("/admin/users", headers=admin, json={"email": address})
        assert invited.status_code == 422 and error_of(invited)["field"] == "email", (address, invited.text)
        org = await client.post(
            "/organizations", headers=operator, json={"name": "x", "admin_email": address}
        )
        assert org.status_code == 422 and error_of(org)["field"] == "admin_email", (address, org.text)
        signed = await client.post("/auth/login", json={"email": address, "password": PASSWORD})
        assert signed.status_code == 422 and error_of(signed)["field"] == "email", (address, signed.text)
        landed = await sso_door(address)
        assert landed.status_code == 401 and error_of(landed)["code"] == "sso_email_invalid", (
            address,
            landed.text,
        )
        assert "email" in error_of(landed)["message"]
    assert await users() == before


def test_the_table_is_the_rule() -> None:
    """The table above is what the shared rule says (so the doors are compared against the rule itself)."""
    from browserfleet_contracts.auth import normalize_email

    assert [normalize_email(typed) for typed, _ in VALID] == [stored for _, stored in VALID]
    for address in INVALID:
        with pytest.raises(ValueError, match=r"\w"):
            normalize_email(address)
