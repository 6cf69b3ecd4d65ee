"""Single sign-on and TOTP on the whole platform, started as `make dev` starts it (devstack, every service its
own process, no worker): a browser's redirects driven by hand between the gateway and a local OpenID
provider (`browserfleet_devkit.oidc_provider.OidcProvider`, the stand-in for the customer's IdP on
127.0.0.1), the client secret read from the real vault, the user created just in time, and the
organization's MFA requirement met with a TOTP code enrolled during that sign-in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest
from browserfleet_devkit.devstack import Platform
from browserfleet_devkit.oidc_provider import OidcProvider

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


def bearer(body: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {body['access_token']}"}


def through_the_provider(gw: httpx.Client, slug: str) -> httpx.Response:
    """What a browser does: the gateway sends it to the provider, the provider back to the callback."""
    start = gw.get(f"/auth/sso/{slug}/login")
    assert start.status_code == 302, start.text
    with httpx.Client() as browser:
        at_idp = browser.get(start.headers["location"])
    assert at_idp.status_code == 302, at_idp.text
    back = at_idp.headers["location"]
    assert back.startswith(f"{gw.base_url}".rstrip("/") + "/auth/sso/callback?")
    return gw.get(urlsplit(back).path + "?" + urlsplit(back).query)


def test_sign_in_through_the_provider_with_totp(platform: Platform, idp: OidcProvider) -> None:
    boot = platform.bootstrap
    assert boot is not None and boot.password
    with httpx.Client(base_url=platform.gateway_url, timeout=30) as gw:
        operator = bearer(
            gw.post("/auth/login", json={"email": boot.admin_email, "password": boot.password}).json()
        )
        org = gw.post(
            "/organizations",
            headers=operator,
            json={"name": "Acme", "slug": "acme", "admin_email": "root@acme.example"},
        )
        assert org.status_code == 201, org.text
        admin_login = gw.post(
            "/auth/login", json={"email": "root@acme.example", "password": org.json()["admin_password"]}
        )
        admin = bearer(admin_login.json())
        secret = {"name": "ACME_IDP", "value": idp.client_secret, "type": "sso_secret"}
        assert gw.post("/api/v1/credentials", headers=admin, json=secret).status_code == 201
        settings = {
            "issuer": idp.issuer,
            "client_id": idp.client_id,
            "client_secret_name": "ACME_IDP",
            "email_domains": ["acme.example"],
            "role_claim": "groups",
            "role_mapping": {"fleet-viewers": "viewer"},
        }
        put = gw.put("/admin/sso", headers=admin, json=settings)
        assert put.status_code == 200, put.text
        assert gw.put("/admin/mfa-policy", headers=admin, json={"required": True}).status_code == 200

        # a refusal first: a token minted for another sign-in (wrong nonce) creates nobody
        idp.user = {
            "sub": "acme-ada",
            "email": "Ada@Acme.example",
            "name": "Ada",
            "groups": ["fleet-viewers"],
        }
        idp.tamper = {"nonce": "not-this-sign-in"}
        refused = through_the_provider(gw, "acme")
        assert refused.status_code == 401 and "nonce" in refused.json()["error"]["message"]
        idp.tamper = {}
        # the admin's token predates the requirement: reading users needs no second factor
        assert "ada@acme.example" not in gw.get("/admin/users", headers=admin).text

        landed = through_the_provider(gw, "acme")
        assert landed.status_code == 303, landed.text
        fragment = landed.headers["location"]
        assert fragment.startswith("/#sso_code=")
        exchanged = gw.post("/auth/sso/exchange", json={"code": fragment.split("=", 1)[1]})
        assert exchanged.status_code == 200, exchanged.text
        challenge = exchanged.json()
        # the org requires a second factor and Ada has none yet: she enrols during this sign-in
        assert challenge["mfa_required"] is True and challenge["enrolment_required"] is True
        enrol = gw.post("/auth/mfa/enrol", json={"challenge": challenge["challenge"]})
        assert enrol.status_code == 200, enrol.text
        code = pyotp.TOTP(enrol.json()["secret"]).now()
        tokens = gw.post("/auth/mfa/verify", json={"challenge": challenge["challenge"], "code": code})
        assert tokens.status_code == 200, tokens.text
        me = gw.get("/auth/me", headers=bearer(tokens.json())).json()
        assert me["user"]["email"] == "ada@acme.example" and me["role"] == "viewer"
        assert me["organization"]["slug"] == "acme"
        # created just in time, once; and she has no password to sign in with
        users = [u["email"] for u in gw.get("/admin/users", headers=admin).json()]
        assert users.count("ada@acme.example") == 1
        assert gw.post("/auth/login", json={"email": "ada@acme.example", "password": "x"}).status_code == 401
