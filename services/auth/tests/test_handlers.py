"""The auth subjects over a real NATS server, against a database of their own (these tests commit)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from browserfleet_auth.app import AuthApp, asyncapi_broker, build
from browserfleet_auth.service import AuthService
from browserfleet_auth.settings import AuthSettings
from browserfleet_contracts import subjects
from browserfleet_contracts.auth import (
    BootstrapReply,
    BootstrapRequest,
    Jwks,
    LoginCommand,
    MePublic,
    MeRequest,
    RefreshRequest,
    TokenPair,
)
from browserfleet_contracts.common import Ack
from browserfleet_core.db import Database
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient, connect
from browserfleet_core.security import JwksVerifier
from faststream.specification import AsyncAPI

Auth = subjects.Auth


@pytest.fixture(scope="module")
async def running(nats_url: str, fresh_database: Callable[[], str]) -> AsyncIterator[AuthApp]:
    app = build(AuthSettings(nats_url=nats_url, database_url=fresh_database()))
    await app.broker.start()
    yield app
    await app.broker.stop()
    assert app.db is not None
    await app.db.dispose()


@pytest.fixture(scope="module")
async def rpc(running: AuthApp, nats_url: str) -> AsyncIterator[RpcClient]:
    nc = await connect(nats_url, name="auth-tests")
    yield RpcClient(nc, timeout=10)
    await nc.close()


@pytest.fixture(scope="module")
async def admin(rpc: RpcClient) -> BootstrapReply:
    reply = await rpc.call(Auth.BOOTSTRAP, BootstrapRequest(org_name="Handler Org"), BootstrapReply)
    assert reply.created and reply.password
    return reply


async def login(rpc: RpcClient, admin: BootstrapReply) -> TokenPair:
    assert admin.password is not None
    return await rpc.call(
        Auth.LOGIN, LoginCommand(email=admin.admin_email, password=admin.password), TokenPair
    )


async def test_login_me_and_jwks_over_nats(rpc: RpcClient, admin: BootstrapReply) -> None:
    pair = await login(rpc, admin)

    async def fetch() -> dict[str, Any]:
        return (await rpc.call(Auth.JWKS, {}, Jwks)).model_dump()

    claims = await JwksVerifier(fetch).verify(pair.access_token)
    me = await rpc.call(Auth.ME, MeRequest(user_id=claims["sub"], org_id=claims["org"]), MePublic)
    assert (me.organization.id, me.user.email, me.role) == (admin.org_id, admin.admin_email, "admin")

    again = await rpc.call(Auth.BOOTSTRAP, BootstrapRequest(), BootstrapReply)
    assert (again.created, again.org_id, again.password) == (False, admin.org_id, None)


async def test_bad_credentials_come_back_as_401(rpc: RpcClient, admin: BootstrapReply) -> None:
    for email in (admin.admin_email, "nobody@example.com"):
        with pytest.raises(ServiceError) as info:
            await rpc.call(Auth.LOGIN, LoginCommand(email=email, password="wrong"), TokenPair)
        assert (info.value.status, info.value.code) == (401, "invalid_credentials")


async def test_refresh_reuse_revocation_is_committed(rpc: RpcClient, admin: BootstrapReply) -> None:
    first = await login(rpc, admin)
    second = await rpc.call(Auth.REFRESH, RefreshRequest(refresh_token=first.refresh_token), TokenPair)

    with pytest.raises(ServiceError) as info:
        await rpc.call(Auth.REFRESH, RefreshRequest(refresh_token=first.refresh_token), TokenPair)
    assert (info.value.status, info.value.code) == (401, "refresh_token_reused")
    # the handler answered 401 *and* kept the revocation: the newest token of the family is dead too
    with pytest.raises(ServiceError) as info:
        await rpc.call(Auth.REFRESH, RefreshRequest(refresh_token=second.refresh_token), TokenPair)
    assert (info.value.status, info.value.code) == (401, "invalid_refresh_token")


async def test_logout_over_nats(rpc: RpcClient, admin: BootstrapReply) -> None:
    pair = await login(rpc, admin)
    ack = await rpc.call(Auth.LOGOUT, RefreshRequest(refresh_token=pair.refresh_token), Ack)
    assert ack.ok
    with pytest.raises(ServiceError) as info:
        await rpc.call(Auth.REFRESH, RefreshRequest(refresh_token=pair.refresh_token), TokenPair)
    assert info.value.status == 401


async def test_hostile_input_is_422_naming_the_field(rpc: RpcClient) -> None:
    with pytest.raises(ServiceError) as info:
        await rpc.call(Auth.LOGIN, {"email": "not-an-email", "password": "x"}, TokenPair)
    assert (info.value.status, info.value.field) == (422, "email")
    with pytest.raises(ServiceError) as info:
        await rpc.call(Auth.LOGIN, {"email": "a@example.com", "password": "x", "admin": True}, TokenPair)
    assert (info.value.status, info.value.field) == (422, "admin")


async def test_concurrent_bootstraps_create_one_org(fresh_database: Callable[[], str]) -> None:
    db = Database(fresh_database(), "auth")
    svc = AuthService()

    async def bootstrap() -> BootstrapReply:
        async with db.transaction() as session:
            return await svc.bootstrap(session, org_name="Race", admin_email="admin@example.com")

    try:
        replies = await asyncio.gather(*(bootstrap() for _ in range(3)))
    finally:
        await db.dispose()
    assert sorted(r.created for r in replies) == [False, False, True]
    assert len({r.org_id for r in replies}) == 1
    assert [r.password is None for r in replies].count(False) == 1


async def test_concurrent_first_logins_share_one_signing_key(fresh_database: Callable[[], str]) -> None:
    db = Database(fresh_database(), "auth")
    svc = AuthService()

    async def key() -> str:
        async with db.transaction() as session:
            return (await svc.signing_key(session)).kid

    try:
        kids = await asyncio.gather(*(key() for _ in range(3)))
        async with db.transaction() as session:
            published = await svc.jwks(session)
    finally:
        await db.dispose()
    assert len(set(kids)) == 1
    assert [k["kid"] for k in published.keys] == kids[:1]


def test_asyncapi_broker_registers_every_subject_without_a_server() -> None:
    spec = AsyncAPI(asyncapi_broker(), title="auth").to_specification().to_jsonable()
    served = {channel["address"] for channel in spec["channels"].values()}
    expected = {
        v for k, v in vars(Auth).items() if k.isupper() and isinstance(v, str) and v.startswith("svc.")
    }
    assert served == expected
