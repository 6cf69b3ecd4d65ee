"""The gateway's HTTP edge against real NATS, with in-test responders for the services (see conftest)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.auth import ACCESS_TOKEN_TYP
from browserfleet_contracts.tasks import ArtifactRef, TaskPublic
from browserfleet_core.errors import Conflict
from browserfleet_core.streams import ensure_streams
from browserfleet_gateway.app import create_app, openapi
from browserfleet_gateway.settings import GatewaySettings
from cryptography.hazmat.primitives import serialization

STEPS_TASK: dict[str, Any] = {
    "title": "t",
    "steps": [
        {"action": "navigate", "url": "https://example.com/login"},
        {"action": "fill", "selector": "#pw", "value": "{{ secrets.SITE_PW }}"},
        {"action": "click", "selector": "#go"},
    ],
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(
    resp: httpx.Response, status: int, *, code: str | None = None, field: str | None = None
) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err: dict[str, Any] = body["error"]
    assert set(err) == {"status", "code", "message", "field", "detail"}
    assert err["status"] == status
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    if field is not None:
        assert err["field"] == field
    return err


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unsigned_claims(signer: Any) -> dict[str, Any]:
    import jwt

    token = signer.token()
    return dict(jwt.decode(token, options={"verify_signature": False}))


# --- authentication -----------------------------------------------------------------------------
async def test_missing_token_is_401_with_challenge(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/v1/tasks")
    assert_error(resp, 401, code="missing_token")
    assert resp.headers["www-authenticate"] == "Bearer"


async def test_alg_none_token_is_401(client: httpx.AsyncClient, signer: Any) -> None:
    header = {"alg": "none", "typ": ACCESS_TOKEN_TYP, "kid": signer.kid}
    token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_unsigned_claims(signer)).encode())}."
    resp = await client.get("/api/v1/tasks", headers=bearer(token))
    assert_error(resp, 401, code="invalid_token")
    assert resp.headers["www-authenticate"] == "Bearer"


async def test_hs256_signed_with_the_public_key_is_401(client: httpx.AsyncClient, signer: Any) -> None:
    key = serialization.load_pem_private_key(signer.pem.encode(), password=None)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": ACCESS_TOKEN_TYP, "kid": signer.kid}
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_unsigned_claims(signer)).encode())}"
    )
    for secret in (public_pem, signer.jwk()["x"].encode()):
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        resp = await client.get("/api/v1/tasks", headers=bearer(f"{signing_input}.{_b64(sig)}"))
        assert_error(resp, 401, code="invalid_token")


@pytest.mark.parametrize(
    ("claims", "header"),
    [
        ({"iss": "someone-else"}, None),
        ({"aud": "another-audience"}, None),
        ({"typ": "refresh"}, None),
        (None, {"typ": "JWT"}),
        ({"org": ""}, None),
    ],
    ids=["iss", "aud", "claim-typ", "header-typ", "no-org"],
)
async def test_wrong_claims_are_401(
    client: httpx.AsyncClient, signer: Any, claims: dict[str, Any] | None, header: dict[str, Any] | None
) -> None:
    resp = await client.get("/api/v1/tasks", headers=bearer(signer.token(claims=claims, header=header)))
    assert_error(resp, 401, code="invalid_token")


async def test_expired_token_is_401(client: httpx.AsyncClient, signer: Any) -> None:
    resp = await client.get("/api/v1/tasks", headers=bearer(signer.token(ttl=-30)))
    assert_error(resp, 401, code="token_expired")


async def test_unknown_kid_is_401_until_the_jwks_has_it(
    client: httpx.AsyncClient, services: Any, new_signer: Any
) -> None:
    rotated = new_signer()
    token = rotated.token(org="org-a", role="user")
    assert_error(await client.get("/api/v1/tasks", headers=bearer(token)), 401, code="invalid_token")
    services.jwks.append(
        rotated.jwk()
    )  # auth rotates its key: the gateway picks it up on the next unknown kid
    resp = await client.get("/api/v1/tasks", headers=bearer(token))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"items": [], "next_cursor": None}


async def test_me_passes_user_and_org_from_the_token(
    client: httpx.AsyncClient, signer: Any, services: Any
) -> None:
    resp = await client.get("/auth/me", headers=bearer(signer.token(sub="u-9", org="org-z")))
    assert resp.status_code == 200, resp.text
    assert resp.json()["user"]["id"] == "u-9"
    assert resp.json()["organization"]["id"] == "org-z"


async def test_login_forwards_client_ip_and_maps_auth_errors(
    client: httpx.AsyncClient, services: Any
) -> None:
    resp = await client.post("/auth/login", json={"email": "a@example.com", "password": "right"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["token_type"] == "bearer"
    _, payload = next(c for c in services.calls if c[0] == endpoints.Auth.LOGIN.subject)
    assert payload["client_ip"] == "127.0.0.1"
    assert resp.headers["cache-control"] == "no-store"
    bad = await client.post("/auth/login", json={"email": "a@example.com", "password": "wrong"})
    assert_error(bad, 401, code="invalid_credentials")
    assert_error(
        await client.post("/auth/login", json={"email": "nope", "password": "x"}), 422, field="email"
    )


# --- tasks --------------------------------------------------------------------------------------
async def test_create_task_checks_secrets_then_creates(
    client: httpx.AsyncClient, signer: Any, services: Any
) -> None:
    services.credentials["org-a"] = {"SITE_PW"}
    resp = await client.post(
        "/api/v1/tasks",
        json=STEPS_TASK,
        headers={**bearer(signer.token(org="org-a", role="user", sub="u-1")), "Idempotency-Key": "k-1"},
    )
    assert resp.status_code == 201, resp.text
    task = TaskPublic.model_validate(resp.json())
    assert resp.headers["location"] == f"/api/v1/tasks/{task.id}"
    assert services.subjects_called() == [
        endpoints.Auth.JWKS.subject,
        endpoints.Auth.USER_STATE.subject,  # is the token's user still active, and in which role
        endpoints.Vault.CHECK_NAMES.subject,
        endpoints.Scheduler.CREATE_TASK.subject,
    ]
    check = services.calls[2][1]
    assert check["names"] == ["SITE_PW"]
    assert check["actor"]["org_id"] == "org-a"
    create = services.calls[3][1]
    assert create["idempotency_key"] == "k-1"
    assert create["actor"] == {
        "org_id": "org-a",
        "user_id": "u-1",
        "api_key_id": None,
        "role": "user",
        "client_ip": "127.0.0.1",
        "request_id": resp.headers["x-request-id"],  # the call's audit entry, opened before the change
        "plan": None,  # the test signer's tokens carry no plan claim
    }
    assert [(a["phase"], a["actor"]["request_id"], a["status"], a["route"]) for a in services.audited] == [
        ("begin", resp.headers["x-request-id"], None, "POST /api/v1/tasks"),
        ("end", resp.headers["x-request-id"], 201, "POST /api/v1/tasks"),
    ]
    assert services.audited[1]["target"] == task.id  # the id the answer created
    got = await client.get(
        f"/api/v1/tasks/{task.id}", headers=bearer(signer.token(org="org-a", role="viewer"))
    )
    assert got.status_code == 200
    assert got.json()["id"] == task.id


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"action": "teleport", "selector": "#x"}, "steps.0"),
        ({"action": "click"}, "steps.0.click.selector"),
        ({"action": "navigate", "url": "file:///etc/passwd"}, "steps.0.navigate.url"),
    ],
    ids=["unknown-action", "missing-selector", "file-url"],
)
async def test_malformed_task_is_422_naming_the_field(
    client: httpx.AsyncClient, signer: Any, services: Any, step: dict[str, Any], field: str
) -> None:
    resp = await client.post("/api/v1/tasks", json={"steps": [step]}, headers=bearer(signer.token()))
    err = assert_error(resp, 422, code="validation_error", field=field)
    assert err["message"].startswith(f"{field}:")
    assert endpoints.Scheduler.CREATE_TASK.subject not in services.subjects_called()
    assert endpoints.Vault.CHECK_NAMES.subject not in services.subjects_called()


async def test_invalid_json_is_422(client: httpx.AsyncClient, signer: Any, services: Any) -> None:
    resp = await client.post(
        "/api/v1/tasks",
        content=b"{not json",
        headers={**bearer(signer.token()), "Content-Type": "application/json"},
    )
    assert_error(resp, 422, code="validation_error")
    assert endpoints.Scheduler.CREATE_TASK.subject not in services.subjects_called()


async def test_unknown_secret_is_422_and_nothing_is_created(
    client: httpx.AsyncClient, signer: Any, services: Any
) -> None:
    resp = await client.post("/api/v1/tasks", json=STEPS_TASK, headers=bearer(signer.token()))
    err = assert_error(resp, 422, code="unknown_secret", field="steps")
    assert err["message"] == "unknown secret(s): SITE_PW"
    assert endpoints.Vault.CHECK_NAMES.subject in services.subjects_called()
    assert endpoints.Scheduler.CREATE_TASK.subject not in services.subjects_called()


async def test_an_unknown_org_llm_key_is_422_on_its_field(
    client: httpx.AsyncClient, signer: Any, services: Any
) -> None:
    task = {"task": "find the cheapest widget", "agent": {"api_key_secret": "ORG_LLM_KEY"}}
    resp = await client.post("/api/v1/tasks", json=task, headers=bearer(signer.token()))
    err = assert_error(resp, 422, code="unknown_secret", field="agent.api_key_secret")
    assert err["message"] == "unknown secret(s): ORG_LLM_KEY"
    assert endpoints.Scheduler.CREATE_TASK.subject not in services.subjects_called()


async def test_oversize_body_is_413_before_parsing(
    client: httpx.AsyncClient, signer: Any, services: Any
) -> None:
    big = {"title": "x" * 5000, "goal": "g"}
    assert_error(
        await client.post("/api/v1/tasks", json=big, headers=bearer(signer.token())),
        413,
        code="payload_too_large",
    )

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length to trust
        yield b'{"goal": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    resp = await client.post(
        "/api/v1/tasks",
        content=chunks(),
        headers={**bearer(signer.token()), "Content-Type": "application/json"},
    )
    assert "content-length" not in resp.request.headers
    assert_error(resp, 413, code="payload_too_large")
    assert endpoints.Scheduler.CREATE_TASK.subject not in services.subjects_called()
    # just under the limit still works
    ok = await client.post("/api/v1/tasks", json={"goal": "y" * 3000}, headers=bearer(signer.token()))
    assert ok.status_code == 201, ok.text


async def test_another_orgs_task_is_404(client: httpx.AsyncClient, signer: Any, services: Any) -> None:
    created = await client.post(
        "/api/v1/tasks", json={"goal": "g"}, headers=bearer(signer.token(org="org-a"))
    )
    assert created.status_code == 201
    task_id = created.json()["id"]
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers=bearer(signer.token(org="org-b")))
    assert_error(resp, 404, code="task_not_found")
    listed = await client.get("/api/v1/tasks", headers=bearer(signer.token(org="org-b")))
    assert listed.json()["items"] == []


async def test_viewer_cannot_mutate(client: httpx.AsyncClient, signer: Any, services: Any) -> None:
    viewer = bearer(signer.token(role="viewer"))
    assert_error(
        await client.post("/api/v1/tasks", json={"goal": "g"}, headers=viewer), 403, code="insufficient_role"
    )
    assert_error(
        await client.post("/api/v1/credentials", json={"name": "A", "value": "v"}, headers=viewer), 403
    )
    assert endpoints.Scheduler.CREATE_TASK.subject not in services.subjects_called()
    assert (await client.get("/api/v1/tasks", headers=viewer)).status_code == 200


async def test_admin_paths_need_admin(client: httpx.AsyncClient, signer: Any) -> None:
    user = bearer(signer.token(role="user"))
    assert_error(await client.get("/admin/workers", headers=user), 403)
    assert_error(await client.post("/admin/webhooks", json={"url": "https://h.example"}, headers=user), 403)


async def test_rpc_service_error_keeps_its_status(
    client: httpx.AsyncClient, signer: Any, services: Any
) -> None:
    async def conflict(_: dict[str, Any]) -> Any:
        raise Conflict(
            "an idempotency key was reused with another body", code="idempotency_conflict", field="task"
        )

    services.serve(endpoints.Scheduler.CREATE_TASK.subject, conflict)
    resp = await client.post("/api/v1/tasks", json={"goal": "g"}, headers=bearer(signer.token()))
    assert_error(resp, 409, code="idempotency_conflict", field="task")


async def test_service_not_running_is_503(client: httpx.AsyncClient, signer: Any) -> None:
    resp = await client.get(
        "/admin/workers", headers=bearer(signer.token())
    )  # nobody serves svc.workers.list
    assert_error(resp, 503, code="service_unavailable")


async def test_unexpected_error_is_500_without_internals(
    client: httpx.AsyncClient, signer: Any, services: Any
) -> None:
    async def garbage(_: dict[str, Any]) -> Any:
        return {"not": "a task"}

    services.serve(endpoints.Scheduler.GET_TASK.subject, garbage)
    resp = await client.get("/api/v1/tasks/abc", headers=bearer(signer.token()))
    err = assert_error(resp, 500, code="internal_error")
    assert err["message"] == "internal error"
    assert "Traceback" not in resp.text and "validation" not in resp.text.lower()
    assert resp.headers["x-content-type-options"] == "nosniff"


# --- artifacts ----------------------------------------------------------------------------------
async def test_artifact_is_streamed_from_the_object_store(
    client: httpx.AsyncClient, signer: Any, services: Any, gateway_nc: Any
) -> None:
    js = gateway_nc.jetstream()
    await ensure_streams(js)
    store = await js.object_store(subjects.ARTIFACTS_BUCKET)
    payload = bytes(range(256)) * 1200  # ~300 KiB: several 128 KiB chunks
    created = await client.post(
        "/api/v1/tasks", json={"goal": "g"}, headers=bearer(signer.token(org="org-a"))
    )
    task_id = created.json()["id"]
    object_name = f"{task_id}/1/shot.png"
    await store.put(object_name, payload)
    task = services.tasks[task_id]
    services.tasks[task_id] = task.model_copy(
        update={
            "artifacts": [
                ArtifactRef(
                    name="shot.png", object_name=object_name, content_type="image/png", size=len(payload)
                )
            ]
        }
    )
    resp = await client.get(
        f"/api/v1/tasks/{task_id}/artifacts/shot.png", headers=bearer(signer.token(org="org-a"))
    )
    assert resp.status_code == 200, resp.text
    assert resp.content == payload
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["content-disposition"].startswith("attachment")
    assert_error(
        await client.get(
            f"/api/v1/tasks/{task_id}/artifacts/nope.png", headers=bearer(signer.token(org="org-a"))
        ),
        404,
        code="artifact_not_found",
    )
    assert_error(
        await client.get(
            f"/api/v1/tasks/{task_id}/artifacts/shot.png", headers=bearer(signer.token(org="org-b"))
        ),
        404,
        code="task_not_found",
    )


# --- ops ----------------------------------------------------------------------------------------
async def test_security_headers_and_metrics(client: httpx.AsyncClient, signer: Any) -> None:
    await client.get("/api/v1/tasks/t-1", headers=bearer(signer.token()))
    resp = await client.get("/health")
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert "cache-control" not in resp.headers
    api = await client.get("/api/v1/tasks")
    assert api.headers["cache-control"] == "no-store"
    metrics = (await client.get("/metrics")).text
    assert 'route="/api/v1/tasks/{task_id}"' in metrics
    assert "/api/v1/tasks/t-1" not in metrics
    assert "browserfleet_gateway_http_request_duration_seconds_bucket" in metrics


async def test_cors_only_for_configured_origins(nats_url: str, gateway_nc: Any) -> None:
    app = create_app(GatewaySettings(nats_url=nats_url, cors_origins="https://ui.example"), nc=gateway_nc)
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        ok = await c.options("/api/v1/tasks", headers={"Origin": "https://ui.example", **preflight})
        evil = await c.options("/api/v1/tasks", headers={"Origin": "https://evil.example", **preflight})
    assert ok.headers["access-control-allow-origin"] == "https://ui.example"
    assert "access-control-allow-origin" not in evil.headers
    no_cors = create_app(GatewaySettings(nats_url=nats_url), nc=gateway_nc)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=no_cors), base_url="http://g") as c:
        resp = await c.get("/health", headers={"Origin": "https://ui.example"})
    assert "access-control-allow-origin" not in resp.headers


def test_openapi_without_a_server() -> None:
    doc = openapi()
    assert doc["paths"]["/api/v1/tasks"]["post"]["responses"]["201"]
    assert "ErrorResponse" in doc["components"]["schemas"]
    tags = {t for p in doc["paths"].values() for op in p.values() for t in op.get("tags", [])}
    assert {"auth", "tasks", "credentials", "admin", "workers", "ops"} <= tags


# --- rate limits --------------------------------------------------------------------------------
def test_token_bucket_refills_at_the_configured_rate() -> None:
    from browserfleet_gateway.ratelimit import RateLimiter, TooManyRequests

    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    limiter.hit("a")
    limiter.hit("a")
    with pytest.raises(TooManyRequests) as info:
        limiter.hit("a")
    assert info.value.retry_after == 1
    limiter.hit("b")  # buckets are per principal
    now[0] += 0.5  # one token back at 2/s
    limiter.hit("a")
    with pytest.raises(TooManyRequests):
        limiter.hit("a")


async def test_rate_limited_principal_gets_429_with_retry_after(
    nats_url: str, gateway_nc: Any, services: Any, signer: Any
) -> None:
    settings = GatewaySettings(nats_url=nats_url, rate_limit_per_second=0.01, rate_limit_burst=2)
    app = create_app(settings, nc=gateway_nc)
    alice, bob = bearer(signer.token(sub="alice")), bearer(signer.token(sub="bob"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c,
    ):
        for _ in range(2):
            assert (await c.get("/api/v1/tasks", headers=alice)).status_code == 200
        limited = await c.get("/api/v1/tasks", headers=alice)
        assert (await c.get("/api/v1/tasks", headers=bob)).status_code == 200
    assert_error(limited, 429, code="rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
