"""The auth subjects over a real NATS server, against a database of their own (these tests commit)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from browserfleet_auth import event_audit, organizations, tokens
from browserfleet_auth.app import AuthApp, asyncapi_broker
from browserfleet_auth.config import AuthConfig
from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import (
    BootstrapReply,
    BootstrapRequest,
    LoginCommand,
    MeRequest,
    RefreshRequest,
    TokenPair,
)
from browserfleet_contracts.common import Empty
from browserfleet_core.db import Database
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient, connect
from browserfleet_core.security import JwksVerifier
from faststream.specification import AsyncAPI

Auth = endpoints.Auth


@pytest.fixture(scope="module")
async def rpc(running: AuthApp, nats_url: str) -> AsyncIterator[RpcClient]:
    nc = await connect(nats_url, name="auth-tests")
    yield RpcClient(nc, timeout=10)
    await nc.close()


@pytest.fixture(scope="module")
async def admin(rpc: RpcClient) -> BootstrapReply:
    reply = await rpc.call(Auth.BOOTSTRAP, BootstrapRequest(org_name="Handler Org"))
    assert reply.created and reply.password
    return reply


async def login(rpc: RpcClient, admin: BootstrapReply) -> TokenPair:
    assert admin.password is not None
    reply = await rpc.call(Auth.LOGIN, LoginCommand(email=admin.admin_email, password=admin.password))
    assert isinstance(reply.root, TokenPair)  # no second factor applies to this admin
    return reply.root


async def test_login_me_and_jwks_over_nats(rpc: RpcClient, admin: BootstrapReply) -> None:
    pair = await login(rpc, admin)

    async def fetch() -> dict[str, Any]:
        return (await rpc.call(Auth.JWKS, Empty())).model_dump()

    claims = await JwksVerifier(fetch).verify(pair.access_token)
    me = await rpc.call(Auth.ME, MeRequest(user_id=claims["sub"], org_id=claims["org"]))
    assert (me.organization.id, me.user.email, me.role) == (admin.org_id, admin.admin_email, "admin")

    again = await rpc.call(Auth.BOOTSTRAP, BootstrapRequest())
    assert (again.created, again.org_id, again.password) == (False, admin.org_id, None)


async def test_bad_credentials_come_back_as_401(rpc: RpcClient, admin: BootstrapReply) -> None:
    for email in (admin.admin_email, "nobody@example.com"):
        with pytest.raises(ServiceError) as info:
            await rpc.call(Auth.LOGIN, LoginCommand(email=email, password="wrong"))
        assert (info.value.status, info.value.code) == (401, "invalid_credentials")


async def test_refresh_reuse_revocation_is_committed(rpc: RpcClient, admin: BootstrapReply) -> None:
    first = await login(rpc, admin)
    second = await rpc.call(Auth.REFRESH, RefreshRequest(refresh_token=first.refresh_token))

    with pytest.raises(ServiceError) as info:
        await rpc.call(Auth.REFRESH, RefreshRequest(refresh_token=first.refresh_token))
    assert (info.value.status, info.value.code) == (401, "refresh_token_reused")
    # the handler answered 401 *and* kept the revocation: the newest token of the family is dead too
    with pytest.raises(ServiceError) as info:
        await rpc.call(Auth.REFRESH, RefreshRequest(refresh_token=second.refresh_token))
    assert (info.value.status, info.value.code) == (401, "invalid_refresh_token")


async def test_logout_over_nats(rpc: RpcClient, admin: BootstrapReply) -> None:
    pair = await login(rpc, admin)
    ack = await rpc.call(Auth.LOGOUT, RefreshRequest(refresh_token=pair.refresh_token))
    assert ack.ok
    with pytest.raises(ServiceError) as info:
        await rpc.call(Auth.REFRESH, RefreshRequest(refresh_token=pair.refresh_token))
    assert info.value.status == 401


async def test_hostile_input_is_422_naming_the_field(rpc: RpcClient) -> None:
    with pytest.raises(ServiceError) as info:
        await rpc.call_raw(Auth.LOGIN, {"email": "not-an-email", "password": "x"})
    assert (info.value.status, info.value.field) == (422, "email")
    with pytest.raises(ServiceError) as info:
        await rpc.call_raw(Auth.LOGIN, {"email": "a@example.com", "password": "x", "admin": True})
    assert (info.value.status, info.value.field) == (422, "admin")


async def test_concurrent_bootstraps_create_one_org(fresh_database: Callable[[], str]) -> None:
    db = Database(fresh_database(), "auth")

    async def bootstrap() -> BootstrapReply:
        async with db.transaction() as session:
            return await organizations.bootstrap(session, org_name="Race", admin_email="admin@example.com")

    try:
        replies = await asyncio.gather(*(bootstrap() for _ in range(3)))
    finally:
        await db.dispose()
    assert sorted(r.created for r in replies) == [False, False, True]
    assert len({r.org_id for r in replies}) == 1
    assert [r.password is None for r in replies].count(False) == 1


async def test_concurrent_first_logins_share_one_signing_key(fresh_database: Callable[[], str]) -> None:
    db = Database(fresh_database(), "auth")

    async def key() -> str:
        async with db.transaction() as session:
            return (await tokens.signing_key(session)).kid

    try:
        kids = await asyncio.gather(*(key() for _ in range(3)))
        async with db.transaction() as session:
            published = await tokens.jwks(session, AuthConfig())
    finally:
        await db.dispose()
    assert len(set(kids)) == 1
    assert [k["kid"] for k in published.keys] == kids[:1]


def test_asyncapi_broker_registers_every_subject_without_a_server() -> None:
    spec = AsyncAPI(asyncapi_broker(), title="auth").to_specification().to_jsonable()
    served = {channel["address"] for channel in spec["channels"].values()}
    expected = {e.subject for e in endpoints.all_endpoints() if e.queue == Auth.QUEUE}
    # and the one EVENTS consumer (a BatchConsumer, described for the document only)
    assert served == expected | {event_audit.FILTER}
