"""`hotcreate` serves `POST /api/v1/tasks` (and `/admin/tasks`) without FastAPI's routing and dependency
solving: every answer must be the one FastAPI's own route gives, byte for byte, refusals included, and every
call behind it (audit entries, the scheduler's request with its tenant and key, the vault's check) the
same. Each case is asked of a gateway with the hot path and of one without it, and the two compared."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import ApiKeyPrincipal, AuthenticateApiKeyRequest
from browserfleet_contracts.tasks import CreateTaskRequest
from browserfleet_core.errors import Conflict, Unauthorized, Unavailable
from browserfleet_core.messaging import ERROR_HEADER
from browserfleet_gateway.app import create_app
from browserfleet_gateway.hotcreate import HotCreates
from browserfleet_gateway.settings import GatewaySettings
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from .conftest import FakeServices, Signer, gateway_settings, task_public

# what differs between two answers to the same request whichever path served it: the call's own id, and
# the bucket as each call left it (the two calls draw on the same principal's bucket)
_PER_CALL = {b"x-request-id", b"ratelimit-remaining", b"ratelimit-reset"}
_WHEN = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def _without_hot_path(app: FastAPI) -> FastAPI:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not HotCreates]
    return app


class _Recorder:
    """What the app under test sends and answers, in raw ASGI terms: status, headers in order, body bytes."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last: tuple[int, list[tuple[bytes, bytes]], bytes] = (0, [], b"")
        self.served = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def recording(message: Any) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
            await send(message)

        await self.app(scope, receive, recording)
        if scope["type"] == "http":
            self.last = (status, headers, b"".join(chunks))


def _comparable(raw: tuple[int, list[tuple[bytes, bytes]], bytes]) -> tuple[Any, ...]:
    status, headers, body = raw
    return status, [(k, b"*" if k in _PER_CALL else v) for k, v in headers], body


@contextlib.asynccontextmanager
async def _pair(
    settings: GatewaySettings, nc: NatsClient
) -> AsyncIterator[tuple[httpx.AsyncClient, _Recorder, httpx.AsyncClient, _Recorder, list[str]]]:
    """A gateway with the hot path, one without, their recorders, and the paths the hot one served itself."""
    hot_app = create_app(settings, nc=nc)
    plain_app = _without_hot_path(create_app(settings, nc=nc))
    hot_rec, plain_rec = _Recorder(hot_app), _Recorder(plain_app)
    served: list[str] = []
    original = HotCreates._serve

    async def spy(self: HotCreates, create: Any, state: Any, scope: Any, receive: Any, send: Any) -> None:
        served.append(scope["path"])
        await original(self, create, state, scope, receive, send)

    HotCreates._serve = spy  # type: ignore[method-assign]
    try:
        async with (
            hot_app.router.lifespan_context(hot_app),
            plain_app.router.lifespan_context(plain_app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=hot_rec, client=("127.0.0.1", 123)),
                base_url="http://gateway.test",
            ) as hot,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=plain_rec, client=("127.0.0.1", 123)),
                base_url="http://gateway.test",
            ) as plain,
        ):
            yield hot, hot_rec, plain, plain_rec, served
    finally:
        HotCreates._serve = original  # type: ignore[method-assign]


class _Scheduler:
    """A deterministic scheduler for the comparison: the same request makes the same task (id and times),
    a key seen with another body is a 409, a title of "garbage" answers what is not a task."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], str | None] = {}

    async def create(self, payload: dict[str, Any]) -> Any:
        req = CreateTaskRequest.model_validate(payload)
        if req.task.title == "garbage":
            return {"not": "a task"}
        if req.idempotency_key is not None:
            seen = self.keys.setdefault((req.actor.org_id, req.idempotency_key), req.body_hash)
            if seen != req.body_hash:
                raise Conflict("idempotency key reused with another body", code="idempotency_conflict")
        basis = json.dumps([req.actor.org_id, req.idempotency_key, req.task.model_dump(mode="json")])
        task_id = hashlib.sha256(basis.encode()).hexdigest()[:32]
        return task_public(req, id=task_id, created_at=_WHEN, updated_at=_WHEN)


_KEYS = {
    "sk_api_write": ApiKeyPrincipal(
        org_id="org-a", key_id="k-write", scopes=["tasks:write"], plan="team", expires_at=None
    ),
    "sk_api_read": ApiKeyPrincipal(
        org_id="org-a", key_id="k-read", scopes=["tasks:read"], plan="team", expires_at=None
    ),
}


async def _serve_api_keys(nc: NatsClient) -> Any:
    async def on_msg(msg: Msg) -> None:
        key = AuthenticateApiKeyRequest.model_validate_json(msg.data).key
        found = _KEYS.get(key)
        if found is None:
            error = Unauthorized("invalid, revoked or expired API key", code="invalid_api_key")
            await nc.publish(
                msg.reply, error.body().model_dump_json().encode(), headers={ERROR_HEADER: "401"}
            )
            return
        await nc.publish(msg.reply, found.model_dump_json().encode())

    sub = await nc.subscribe(endpoints.Auth.AUTHENTICATE_API_KEY.subject, cb=on_msg)
    await nc.flush()
    return sub


def _calls(services: FakeServices, calls_from: int, audited_from: int) -> tuple[Any, Any]:
    """The calls to the services and the audit entries since the given marks, without the call's id."""
    audited = [
        {**entry, "actor": {k: v for k, v in entry["actor"].items() if k != "request_id"}}
        for entry in services.audited[audited_from:]
    ]
    calls = [
        (subject, {**payload, "actor": {k: v for k, v in payload["actor"].items() if k != "request_id"}})
        if isinstance(payload.get("actor"), dict)
        else (subject, payload)
        for subject, payload in services.calls[calls_from:]
    ]
    return calls, audited


async def test_hot_create_answers_as_the_route_does(
    nats_url: str, gateway_nc: NatsClient, signer: Signer, services: FakeServices
) -> None:
    # no cache of users or keys: each app's would expire on its own clock (the cases take longer than a TTL
    # on a loaded machine), and one would ask auth where the other did not
    settings = gateway_settings(
        nats_url,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
        max_body_bytes=4096,
        user_state_cache_seconds=0,
        api_key_cache_seconds=0,
    )
    scheduler = _Scheduler()
    services.serve(endpoints.Scheduler.CREATE_TASK.subject, scheduler.create)
    services.credentials["org-a"] = {"KNOWN"}
    keys_sub = await _serve_api_keys(gateway_nc)
    user = f"u-{uuid.uuid4().hex[:8]}"
    writer = {"Authorization": f"Bearer {signer.token(sub=user, org='org-a', role='user')}"}
    viewer = {"Authorization": f"Bearer {signer.token(sub=user + 'v', org='org-a', role='viewer')}"}
    other_org = {"Authorization": f"Bearer {signer.token(sub=user + 'b', org='org-b', role='admin')}"}
    lower = {"Authorization": f"bearer {signer.token(sub=user, org='org-a', role='user')}"}
    json_type = {"Content-Type": "application/json"}
    good = json.dumps({"goal": "g"}).encode()
    steps = json.dumps({"title": "s", "steps": [{"action": "navigate", "url": "https://example.com/"}]})
    cases: list[tuple[str, dict[str, str], bytes | None]] = [
        ("/api/v1/tasks", writer | json_type, good),
        ("/admin/tasks", writer | json_type, good),
        ("/api/v1/tasks", writer | json_type, steps.encode()),
        ("/api/v1/tasks?x=1", writer | json_type, good),
        ("/api/v1/tasks", lower | json_type, good),
        ("/api/v1/tasks", other_org | json_type, good),
        # the body: not JSON, wrong types, missing fields, not an object, empty, other content types
        ("/api/v1/tasks", writer | json_type, b'{"goal": '),
        ("/api/v1/tasks", writer | json_type, b'{"goal": "g",}'),
        ("/api/v1/tasks", writer | json_type, b'{"goal": 5}'),
        (
            "/api/v1/tasks",
            writer | json_type,
            b'{"steps": "x", "priority": "urgent", "timeout_seconds": "a"}',
        ),
        ("/api/v1/tasks", writer | json_type, b'{"title": "t"}'),
        ("/api/v1/tasks", writer | json_type, b"{}"),
        ("/api/v1/tasks", writer | json_type, b"[]"),
        ("/api/v1/tasks", writer | json_type, b"null"),
        ("/api/v1/tasks", writer | json_type, b'"goal"'),
        ("/api/v1/tasks", writer | json_type, b""),
        ("/api/v1/tasks", writer, None),
        ("/api/v1/tasks", writer | json_type, b'{"goal": "\xff\xfe"}'),
        ("/api/v1/tasks", writer | {"Content-Type": "text/plain"}, good),
        ("/api/v1/tasks", writer | {"Content-Type": "application/x-www-form-urlencoded"}, b"goal=g"),
        ("/api/v1/tasks", writer, good),
        ("/api/v1/tasks", writer | {"Content-Type": "application/vnd.bf+json"}, good),
        ("/api/v1/tasks", writer | {"Content-Type": "application/json; charset=utf-8"}, good),
        ("/api/v1/tasks", writer | {"Content-Type": "Application/JSON"}, good),
        ("/api/v1/tasks", writer | {"Content-Type": "json"}, good),
        ("/api/v1/tasks", writer | json_type, b'{"goal": "' + b"x" * 5000 + b'"}'),
        ("/api/v1/tasks", writer | json_type, b"[" * 100 + b"]" * 100),
        ("/api/v1/tasks", writer | json_type, b'{"goal": "g", "unknown": 1}'),
        # what the task names must exist in the caller's org
        ("/api/v1/tasks", writer | json_type, b'{"goal": "use {{ secrets.KNOWN }}"}'),
        ("/api/v1/tasks", writer | json_type, b'{"goal": "use {{ secrets.MISSING }}"}'),
        ("/api/v1/tasks", other_org | json_type, b'{"goal": "use {{ secrets.KNOWN }}"}'),
        # who is calling
        ("/api/v1/tasks", json_type, good),
        ("/api/v1/tasks", {"Authorization": "Basic dTpw"} | json_type, good),
        ("/api/v1/tasks", {"Authorization": "Bearer "} | json_type, good),
        ("/api/v1/tasks", {"Authorization": "Bearer not.a.token"} | json_type, good),
        ("/api/v1/tasks", {"Authorization": "Bearer sk_api_write"} | json_type, good),
        ("/api/v1/tasks", {"Authorization": "Bearer sk_api_read"} | json_type, good),
        ("/api/v1/tasks", {"Authorization": "Bearer sk_api_revoked"} | json_type, good),
        ("/api/v1/tasks", viewer | json_type, good),
        # which check answers first when several fail
        ("/api/v1/tasks", json_type, b'{"goal": '),
        ("/api/v1/tasks", json_type, b'{"goal": 5}'),
        ("/api/v1/tasks", viewer | json_type, b'{"goal": 5}'),
        ("/api/v1/tasks", writer | json_type | {"Idempotency-Key": "k" * 256}, b'{"goal": 5}'),
        # Idempotency-Key: first use, replay, another body, too long
        ("/api/v1/tasks", writer | json_type | {"Idempotency-Key": "key-1"}, good),
        ("/api/v1/tasks", writer | json_type | {"Idempotency-Key": "key-1"}, good),
        ("/api/v1/tasks", writer | json_type | {"Idempotency-Key": "key-1"}, b'{"goal": "other"}'),
        ("/api/v1/tasks", other_org | json_type | {"Idempotency-Key": "key-1"}, b'{"goal": "other"}'),
        ("/api/v1/tasks", writer | json_type | {"Idempotency-Key": "k" * 256}, good),
        ("/api/v1/tasks", writer | json_type | {"Idempotency-Key": ""}, good),
        # the scheduler's reply is not a task: a 500
        ("/api/v1/tasks", writer | json_type, b'{"goal": "g", "title": "garbage"}'),
        # not the create: left to FastAPI by the hot path
        ("/api/v1/tasks/", writer | json_type, good),
    ]
    try:
        async with _pair(settings, gateway_nc) as (hot, hot_rec, plain, plain_rec, served):
            for path, headers, body in cases:
                answers = []
                for client, rec in ((hot, hot_rec), (plain, plain_rec)):
                    marks = len(services.calls), len(services.audited)
                    await client.post(path, headers=headers, content=body)
                    answers.append((_comparable(rec.last), _calls(services, *marks)))
                assert answers[0] == answers[1], (path, headers, body)

            # and when auth cannot take the audit entry, the call is refused the same way
            async def refuse(_: dict[str, Any]) -> Any:
                raise Unavailable("auth is down", code="database_unavailable")

            services.serve(endpoints.Auth.RECORD_REQUEST.subject, refuse)
            answers = []
            for client, rec in ((hot, hot_rec), (plain, plain_rec)):
                marks = len(services.calls), len(services.audited)
                await client.post("/api/v1/tasks", headers=writer | json_type, content=good)
                answers.append((_comparable(rec.last), _calls(services, *marks)))
            assert answers[0] == answers[1]
            assert answers[0][0][0] == 503
    finally:
        await keys_sub.unsubscribe()
    # the hot path served every create it should (all but the too large and too deep bodies, which the
    # body limits refuse before it, and the trailing slash) and none of the rest
    assert len(served) == len(cases) + 1 - 3
    assert "/api/v1/tasks/" not in served


async def test_hot_create_rate_limit_is_the_routes(
    nats_url: str, gateway_nc: NatsClient, signer: Signer, services: FakeServices
) -> None:
    # each replica its own bucket (`local`), so that one user meets the same limit at each
    settings = gateway_settings(
        nats_url, rate_limit_per_second=0.01, rate_limit_burst=2, rate_limit_store="local"
    )
    services.serve(endpoints.Scheduler.CREATE_TASK.subject, _Scheduler().create)
    token = signer.token(sub=f"u-{uuid.uuid4().hex[:8]}", org="org-a", role="user")
    async with _pair(settings, gateway_nc) as (hot, hot_rec, plain, plain_rec, served):
        answers = {}
        for name, client, rec in (("hot", hot, hot_rec), ("plain", plain, plain_rec)):
            got = []
            for _ in range(3):
                await client.post(
                    "/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}, json={"goal": "g"}
                )
                got.append(_comparable(rec.last))
            answers[name] = got
            assert [status for status, _, _ in got] == [201, 201, 429]
    assert answers["hot"] == answers["plain"]
    assert len(served) == 3


def test_submit_routes_are_served_hot() -> None:
    """Both submission routes are declared to the hot path, with the route's own access rule."""
    from browserfleet_gateway import hotcreate

    create_app(gateway_settings("nats://127.0.0.1:1"))  # routes only: nothing connects
    assert set(hotcreate.CREATES) == {"/api/v1/tasks", "/admin/tasks"}
    for create in hotcreate.CREATES.values():
        assert create.rule.min_role == "user" and create.rule.scopes == ("tasks:write",)
        assert create.route.status_code == 201
