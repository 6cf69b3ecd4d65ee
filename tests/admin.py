"""Signing in as the platform's first admin, as the whole-platform suites do."""

from __future__ import annotations

from typing import Any

import httpx
from browserfleet_devkit.devstack import Platform


def admin_login(platform: Platform) -> dict[str, Any]:
    """The token pair of the admin the platform's first start created (it printed the password)."""
    boot = platform.bootstrap
    assert boot is not None and boot.password, "first start must print the admin password"
    resp = httpx.post(
        f"{platform.gateway_url}/auth/login",
        json={"email": boot.admin_email, "password": boot.password},
        timeout=30,  # httpx's 5 s default is shorter than an argon2 check on a busy 2-core machine
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body
