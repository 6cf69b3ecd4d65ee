"""Fixtures for the gateway's tests.

The gateway talks to real NATS (the `nats_url` fixture). The auth, scheduler, vault, webhooks and
worker-gateway services it calls are stood in by small in-test NATS responders (`FakeServices`): they
answer the real subjects with the real contract models and errors (`Bf-Error` header), so what is tested
is the gateway's HTTP edge, not those services' logic. Tokens are signed with a real Ed25519 key from
`browserfleet_core.security.generate_signing_key`, and the fake auth serves its JWKS.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.auth import (
    ACCESS_TOKEN_TYP,
    TOKEN_AUDIENCE,
    TOKEN_ISSUER,
    Jwks,
    LoginCommand,
    MePublic,
    MeRequest,
    OrganizationPublic,
    TokenPair,
    UserPublic,
)
from browserfleet_contracts.common import Page
from browserfleet_contracts.tasks import CreateTaskRequest, GetTaskRequest, ListTasksRequest, TaskPublic
from browserfleet_contracts.vault import CheckNamesReply, CheckNamesRequest
from browserfleet_core.errors import NotFound, ServiceError, Unauthorized
from browserfleet_core.messaging import ERROR_HEADER, connect
from browserfleet_core.security import generate_signing_key, public_jwk
from browserfleet_gateway.app import create_app
from browserfleet_gateway.settings import GatewaySettings
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import BaseModel

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
        now = int(time.time())
        body = {
            "iss": TOKEN_ISSUER,
            "aud": TOKEN_AUDIENCE,
            "sub": sub,
            "org": org,
            "role": role,
            "typ": ACCESS_TOKEN_TYP,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            **(claims or {}),
        }
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
        self.jwks: list[dict[str, Any]] = [signer.jwk()]
        self.tasks: dict[str, TaskPublic] = {}
        self.credentials: dict[str, set[str]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.handlers: dict[str, Handler] = {
            subjects.Auth.JWKS: self._jwks,
            subjects.Auth.ME: self._me,
            subjects.Auth.LOGIN: self._login,
            subjects.Scheduler.CREATE_TASK: self._create_task,
            subjects.Scheduler.GET_TASK: self._get_task,
            subjects.Scheduler.LIST_TASKS: self._list_tasks,
            subjects.Vault.CHECK_NAMES: self._check_names,
        }
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

    async def _dispatch(self, msg: Msg) -> None:
        payload = json.loads(msg.data or b"{}")
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
        return TokenPair(access_token="a", refresh_token="r", expires_in=900)

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


@pytest.fixture
def settings(nats_url: str) -> GatewaySettings:
    # jwks_min_refresh_seconds=0: the rotated-key test must not have to wait out the refresh interval.
    return GatewaySettings(
        nats_url=nats_url,
        database_url=None,
        max_body_bytes=4096,
        jwks_min_refresh_seconds=0,
        rpc_timeout_seconds=5,
    )


@pytest.fixture
async def gateway_nc(nats_url: str) -> AsyncIterator[NatsClient]:
    nc = await connect(nats_url, name="gateway-test")
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def client(
    settings: GatewaySettings, gateway_nc: NatsClient, services: FakeServices
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, nc=gateway_nc)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c,
    ):
        yield c
