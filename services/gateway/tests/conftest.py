"""Fixtures for the gateway's tests.

The gateway talks to real NATS (the `nats_url` fixture). The auth, scheduler, vault, webhooks and
worker-gateway services it calls are stood in by small in-test NATS responders (`FakeServices`): they
answer the real subjects with the real contract models and errors (`Bf-Error` header), so what is tested
is the gateway's HTTP edge, not those services' logic. Tokens are signed with a real Ed25519 key from
`browserfleet_core.security.generate_signing_key`, and the fake auth serves its JWKS.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import (
    ACCESS_TOKEN_TYP,
    Jwks,
    LoginCommand,
    MePublic,
    MeRequest,
    OrganizationPublic,
    TokenPair,
    UserPublic,
    UserState,
    UserStateRequest,
)
from browserfleet_contracts.common import Page
from browserfleet_contracts.tasks import CreateTaskRequest, GetTaskRequest, ListTasksRequest, TaskPublic
from browserfleet_contracts.vault import CheckNamesReply, CheckNamesRequest
from browserfleet_core.errors import NotFound, ServiceError, Unauthorized
from browserfleet_core.messaging import ERROR_HEADER, RpcClient, connect
from browserfleet_core.security import access_claims, generate_signing_key, public_jwk
from browserfleet_gateway.app import create_app
from browserfleet_gateway.settings import GatewaySettings
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import BaseModel

if TYPE_CHECKING:
    from .taskstack import Stack

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Signer:
    """A real Ed25519 signing key, as the auth service holds one."""

    def __init__(self) -> None:
        self.kid, self.pem = generate_signing_key()

    def jwk(self) -> dict[str, Any]:
        return public_jwk(self.pem, self.kid)

    def token(
        self,
        *,
        sub: str = "user-1",
        org: str = "org-a",
        role: str = "admin",
        ttl: int = 300,
        claims: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
    ) -> str:
        body = access_claims(sub=sub, org=org, role=role, ttl_seconds=ttl, jti=uuid.uuid4().hex, extra=claims)
        return jwt.encode(
            body,
            self.pem,
            algorithm="EdDSA",
            headers={"kid": self.kid, "typ": ACCESS_TOKEN_TYP, **(header or {})},
        )


def task_public(req: CreateTaskRequest, **overrides: Any) -> TaskPublic:
    now = datetime.now(UTC)
    t = req.task
    data: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "org_id": req.actor.org_id,
        "title": t.title,
        "kind": t.kind or "steps",
        "status": "queued",
        "priority": t.priority,
        "worker_tags": t.worker_tags,
        "spec": t.spec(),
        "timeout_seconds": t.timeout_seconds,
        "max_attempts": t.max_attempts,
        "attempt": 1,
        "created_by": req.actor.user_id,
        "created_at": now,
        "updated_at": now,
        **overrides,
    }
    return TaskPublic(**data)


class FakeServices:
    """In-test NATS responders standing in for auth, scheduler and vault (see the module docstring)."""

    def __init__(self, nc: NatsClient, signer: Signer) -> None:
        self.nc = nc
        self.signer = signer
        self.jwks: list[dict[str, Any]] = [signer.jwk()]
        self.tasks: dict[str, TaskPublic] = {}
        self.credentials: dict[str, set[str]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.handlers: dict[str, Handler] = {
            endpoints.Auth.JWKS.subject: self._jwks,
            endpoints.Auth.ME.subject: self._me,
            endpoints.Auth.LOGIN.subject: self._login,
            endpoints.Auth.USER_STATE.subject: self._user_state,
            endpoints.Scheduler.CREATE_TASK.subject: self._create_task,
            endpoints.Scheduler.GET_TASK.subject: self._get_task,
            endpoints.Scheduler.LIST_TASKS.subject: self._list_tasks,
            endpoints.Vault.CHECK_NAMES.subject: self._check_names,
            endpoints.Auth.RECORD_REQUEST.subject: self._record_request,
        }
        # the audit entries the gateway wrote (kept apart from `calls`: every change makes two)
        self.audited: list[dict[str, Any]] = []
        self._subs: list[Any] = []

    async def start(self) -> None:
        for subject in self.handlers:
            self._subs.append(await self.nc.subscribe(subject, cb=self._dispatch))

    def serve(self, subject: str, handler: Handler) -> None:
        """Replace (or add) the behaviour of one subject for a test."""
        if subject not in self.handlers:
            raise AssertionError("call serve() for new subjects before start()")
        self.handlers[subject] = handler

    def subjects_called(self) -> list[str]:
        return [s for s, _ in self.calls]

    async def _record_request(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.audited.append(payload)
        return {"ok": True}

    async def _dispatch(self, msg: Msg) -> None:
        payload = json.loads(msg.data or b"{}")
        if msg.subject != endpoints.Auth.RECORD_REQUEST.subject:
            self.calls.append((msg.subject, payload))
        try:
            result = await self.handlers[msg.subject](payload)
        except ServiceError as exc:
            await self.nc.publish(
                msg.reply, exc.body().model_dump_json().encode(), headers={ERROR_HEADER: str(exc.status)}
            )
            return
        data = (
            result.model_dump_json().encode()
            if isinstance(result, BaseModel)
            else json.dumps(result).encode()
        )
        await self.nc.publish(msg.reply, data)

    async def _jwks(self, _: dict[str, Any]) -> Jwks:
        return Jwks(keys=list(self.jwks))

    async def _me(self, payload: dict[str, Any]) -> MePublic:
        req = MeRequest.model_validate(payload)
        return MePublic(
            user=UserPublic(id=req.user_id, email="a@example.com", name="A", role="admin", org_id=req.org_id),
            role="admin",
            organization=OrganizationPublic(id=req.org_id, name="Org", slug="org", plan="free"),
        )

    async def _login(self, payload: dict[str, Any]) -> TokenPair:
        cmd = LoginCommand.model_validate(payload)
        if cmd.password != "right":
            raise Unauthorized("invalid email or password", code="invalid_credentials")
        # a token the gateway can read: login answers the user (`user`) from its claims beside the tokens
        return TokenPair(access_token=self.signer.token(sub="u-login"), refresh_token="r", expires_in=900)

    async def _user_state(self, payload: dict[str, Any]) -> UserState:
        # every user the tests sign for is active, may hold any role (the token's counts) and has no MFA
        req = UserStateRequest.model_validate(payload)
        return UserState(user_id=req.user_id, org_id=req.org_id, active=True, role="admin")

    async def _create_task(self, payload: dict[str, Any]) -> TaskPublic:
        req = CreateTaskRequest.model_validate(payload)
        task = task_public(req)
        self.tasks[task.id] = task
        return task

    async def _get_task(self, payload: dict[str, Any]) -> TaskPublic:
        req = GetTaskRequest.model_validate(payload)
        task = self.tasks.get(req.task_id)
        if task is None or task.org_id != req.actor.org_id:
            raise NotFound("task not found", code="task_not_found")
        return task

    async def _list_tasks(self, payload: dict[str, Any]) -> Page[TaskPublic]:
        req = ListTasksRequest.model_validate(payload)
        items = [t for t in self.tasks.values() if t.org_id == req.actor.org_id]
        return Page[TaskPublic](items=items[: req.limit])

    async def _check_names(self, payload: dict[str, Any]) -> CheckNamesReply:
        req = CheckNamesRequest.model_validate(payload)
        known = self.credentials.get(req.actor.org_id, set())
        return CheckNamesReply(missing=[n for n in req.names if n not in known])

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def new_signer() -> Callable[[], Signer]:
    """Another key, e.g. the one auth rotates to."""
    return Signer


@pytest.fixture
async def services(nats_url: str, signer: Signer) -> AsyncIterator[FakeServices]:
    nc = await connect(nats_url, name="gateway-test-services")
    fake = FakeServices(nc, signer)
    await fake.start()
    await nc.flush()
    try:
        yield fake
    finally:
        await fake.stop()
        await nc.close()


def gateway_settings(nats_url: str, **overrides: Any) -> GatewaySettings:
    """A test gateway: no database; a rotated key is refetched at once (the rotated-key tests must not wait
    out the refresh interval); rate limits off, since they are shared by every replica through NATS, so by
    every test of the package (the same users, the same 127.0.0.1): the limit tests set their own."""
    defaults: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": None,
        "jwks_min_refresh_seconds": 0,
        "rate_limit_per_second": 0,
        "login_rate_per_second": 0,
    }
    return GatewaySettings(**(defaults | overrides))


@contextlib.asynccontextmanager
async def serving(
    app: FastAPI, *, base_url: str = "http://gateway.test", peer: tuple[str, int] = ("127.0.0.1", 123)
) -> AsyncIterator[httpx.AsyncClient]:
    """`app` started (its lifespan) and an httpx client calling it from `peer`."""
    transport = httpx.ASGITransport(app=app, client=peer)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=base_url) as c,
    ):
        yield c


async def gateway_replica(
    stack: AsyncExitStack, settings: GatewaySettings, name: str, **client: Any
) -> tuple[FastAPI, httpx.AsyncClient]:
    """A gateway replica with its own NATS connection (named `name`), started, and a client for it
    (`serving`'s options); `stack` stops them."""
    nc = await connect(settings.nats_url, name=name)
    stack.push_async_callback(nc.close)
    app = create_app(settings, nc=nc)
    return app, await stack.enter_async_context(serving(app, **client))


@dataclass
class Clock:
    """A clock the test moves by hand (`clock.t += seconds`), for what takes a `clock` callable."""

    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def settings(nats_url: str) -> GatewaySettings:
    return gateway_settings(nats_url, max_body_bytes=4096, rpc_timeout_seconds=5)


@pytest.fixture
async def gateway_nc(nats_url: str) -> AsyncIterator[NatsClient]:
    nc = await connect(nats_url, name="gateway-test")
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
def gateway_rpc() -> RpcClient | None:
    """The `client` gateway's service calls: None, its own, unless a module overrides this."""
    return None


@pytest.fixture
async def client(
    settings: GatewaySettings,
    gateway_nc: NatsClient,
    services: FakeServices,
    gateway_rpc: RpcClient | None,
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(settings, nc=gateway_nc, rpc=gateway_rpc)) as c:
        yield c


@pytest.fixture(scope="module")
async def stack(nats_url: str, database_url: str) -> AsyncIterator[Stack]:
    """The real auth and scheduler behind a gateway, on a database of the module's own (`taskstack`), for the
    task modules; the identity modules override it with `identitystack`'s."""
    from .taskstack import open_stack  # taskstack builds on this module's helpers

    async with open_stack(nats_url, database_url) as s:
        yield s
