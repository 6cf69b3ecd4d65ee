"""One platform for the identity package (SSO and TOTP, the audit trail, hostile HTTP, the quick API fuzz),
started as `make dev` starts it (devstack: every service its own process, the gateway under uvicorn as in
production, no worker)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from browserfleet_devkit.devstack import Platform

from ..platforms import own_platform

# the hostile-HTTP tests wait these out: short, but far above what a request on 127.0.0.1 takes
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
CONNECTIONS_PER_CLIENT = 48


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with own_platform(
        "bf_identity",
        tmp_path_factory.mktemp("home"),
        open_nats=True,
        workers=0,
        output=lambda _line: None,
        env={
            # the test's provider speaks http on 127.0.0.1; production providers need https
            "SSO_ALLOW_HTTP_ISSUERS": "true",
            # one client makes more sign-in calls than the per-address burst lets a person make, and the
            # fuzz more calls than a person's rate (the limits have their own tests)
            "LOGIN_BURST": "50",
            "RATE_LIMIT_PER_SECOND": "0",
            "HTTP_LIMITS": json.dumps(
                {
                    "header_timeout_seconds": HEADER_TIMEOUT,
                    "body_timeout_seconds": BODY_TIMEOUT,
                    "max_connections_per_client": CONNECTIONS_PER_CLIENT,
                }
            ),
        },
    ) as running:
        yield running


def bearer(body: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {body['access_token']}"}


def login(url: str, email: str, password: str) -> dict[str, Any]:
    resp = httpx.post(f"{url}/auth/login", json={"email": email, "password": password}, timeout=30)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def operator_login(platform: Platform) -> dict[str, Any]:
    """The bootstrap admin: the first organization's admin and the platform operator."""
    boot = platform.bootstrap
    assert boot is not None and boot.password
    return login(platform.gateway_url, boot.admin_email, boot.password)


def new_org(platform: Platform, name: str) -> dict[str, Any]:
    """An organization of its own (created by the operator) and its first admin, signed in."""
    operator = operator_login(platform)
    email = f"admin-{name.lower().replace(' ', '-')}@example.test"
    created = httpx.post(
        f"{platform.gateway_url}/organizations",
        json={"name": name, "admin_email": email},
        headers=bearer(operator),
        timeout=30,
    )
    assert created.status_code == 201, created.text
    org = created.json()
    return {"org": org, "admin": login(platform.gateway_url, email, org["admin_password"])}
