"""The REAL auth and vault services (in-process brokers on the test's NATS server, a migrated database of
their own per test module) behind gateway replicas served through httpx: what the SSO, MFA, email-rule and
live-session tests share. Auth's clock is a `Clock` the tests move (TOTP steps, throttle windows); access
tokens keep the wall clock. The identity provider is `browserfleet_devkit.oidc_provider.OidcProvider`, the
stand-in for a customer's IdP."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from browserfleet_auth.app import AuthApp, build, config_from
from browserfleet_auth.settings import AuthSettings
from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import BootstrapReply, BootstrapRequest
from browserfleet_core import migrations
from browserfleet_core.messaging import RpcClient, connect
from browserfleet_devkit.testing import unique_name
from browserfleet_vault.app import create_context
from browserfleet_vault.settings import VaultSettings
from fastapi import FastAPI

from .conftest import gateway_replica, gateway_settings

Headers = dict[str, str]


class Clock:
    """Auth's clock: the wall clock's now at creation, moved only by the test; or, `flowing`, the wall clock
    plus what the test moved it by (for tests that compare it with access tokens' wall-clock `iat`)."""

    def __init__(self, *, flowing: bool = False) -> None:
        self.flowing = flowing
        self._start = datetime.now(UTC)
        self._moved = timedelta()

    @property
    def now(self) -> datetime:
        return (datetime.now(UTC) if self.flowing else self._start) + self._moved

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self._moved += timedelta(seconds=seconds)


@dataclass
class Stack:
    nats_url: str
    auth: AuthApp
    clock: Clock
    operator: BootstrapReply
    make_gateway: Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]
    passwords: dict[str, str] = field(default_factory=dict)
    _operator: Headers = field(default_factory=dict)

    async def gateway(self, **overrides: Any) -> httpx.AsyncClient:
        return (await self.make_gateway(**overrides))[1]

    async def login(self, client: httpx.AsyncClient, email: str, password: str | None = None) -> Headers:
        resp = await client.post(
            "/auth/login", json={"email": email, "password": password or self.passwords[email]}
        )
        assert resp.status_code == 200 and "access_token" in resp.json(), resp.text
        return bearer(resp.json()["access_token"])

    async def operator_headers(self, client: httpx.AsyncClient) -> Headers:
        """The platform operator's, signed in once per module (argon2 is slow on purpose)."""
        assert self.operator.password is not None
        if not self._operator:
            self._operator = await self.login(client, self.operator.admin_email, self.operator.password)
        return self._operator

    async def new_org(self, client: httpx.AsyncClient, slug: str | None = None) -> tuple[str, str, Headers]:
        """(org id, slug, its first admin's headers)."""
        slug = slug or unique_name("org").replace("_", "-").lower()[:40]
        resp = await client.post(
            "/organizations",
            headers=await self.operator_headers(client),
            json={"name": slug, "slug": slug, "admin_email": f"admin@{slug}.example"},
        )
        assert resp.status_code == 201, resp.text
        body = resp.json()
        self.passwords[body["admin_email"]] = body["admin_password"]
        return body["id"], slug, await self.login(client, body["admin_email"])

    async def add_user(
        self, client: httpx.AsyncClient, admin: Headers, email: str, role: str = "user"
    ) -> str:
        resp = await client.post("/admin/users", headers=admin, json={"email": email, "role": role})
        assert resp.status_code == 201, resp.text
        self.passwords[resp.json()["email"]] = resp.json()["password"]
        return str(resp.json()["id"])


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def error_of(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()["error"]
    return body


def fresh_database(database_url: str) -> tuple[str, Callable[[], None]]:
    server, _, _ = database_url.rpartition("/")
    name = unique_name("bf_gw_id_")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with (
            psycopg.connect(f"{server}/postgres", autocommit=True) as conn,
            contextlib.suppress(psycopg.Error),
        ):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{server}/{name}", drop


_replicas = itertools.count()
_addresses = itertools.count()


@contextlib.asynccontextmanager
async def identity_stack(
    nats_url: str, database_url: str, *, flowing_clock: bool = False
) -> AsyncIterator[Stack]:
    url, drop = fresh_database(database_url)
    migrations.upgrade("browserfleet_auth", url)
    migrations.upgrade("browserfleet_vault", url)
    clock = Clock(flowing=flowing_clock)
    settings = AuthSettings(nats_url=nats_url, database_url=url, sso_allow_http_issuers=True)
    auth = build(settings, config=dataclasses.replace(config_from(settings), now=clock))
    vault = create_context(
        VaultSettings(
            nats_url=nats_url, database_url=url, vault_master_key=base64.b64encode(os.urandom(32)).decode()
        )
    )
    async with AsyncExitStack() as stack:
        await auth.start()
        stack.push_async_callback(auth.stop)
        await vault.broker.start()
        stack.push_async_callback(vault.db.dispose)
        stack.push_async_callback(vault.broker.stop)
        await vault.broker.connection.flush()
        nc = await connect(nats_url, name="identity-bootstrap")
        stack.push_async_callback(nc.close)
        operator: BootstrapReply = await RpcClient(nc, timeout=10).call(
            endpoints.Auth.BOOTSTRAP, BootstrapRequest(org_name="Operators")
        )

        async def make(**overrides: Any) -> tuple[FastAPI, httpx.AsyncClient]:
            settings = gateway_settings(nats_url, rpc_timeout_seconds=10, **overrides)
            # each client its own address: sign-in throttling counts per address, and tests must not share
            n = next(_addresses)
            return await gateway_replica(
                stack,
                settings,
                f"gw-id-{next(_replicas)}",
                base_url="http://gw.test",
                peer=(f"127.0.{n // 250}.{n % 250 + 2}", 40000),
            )

        yield Stack(nats_url=nats_url, auth=auth, clock=clock, operator=operator, make_gateway=make)
    drop()
