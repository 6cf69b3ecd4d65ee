"""The gateway's health: /health/live (the process), /health and /health/ready (its own checks, critical
`nats` and `auth`, and every service's own report asked over the bus, which only degrades it), /metrics with
the health gauges. The services here are the package's stand-ins (conftest) plus, where a test needs a
service's health answer, a real `browserfleet_core.health` responder on the real NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from browserfleet_core.health import Health, health_router
from browserfleet_core.messaging import make_broker
from browserfleet_gateway.app import create_app
from browserfleet_gateway.settings import GatewaySettings
from faststream.nats import NatsBroker

SEED_FIELDS = {"status", "timestamp", "uptime", "version"}


@pytest.fixture
async def vault_health(nats_url: str) -> AsyncIterator[dict[str, Any]]:
    """svc.vault.health answered by the real responder; `state["database"]` says whether its check passes."""
    state: dict[str, Any] = {"database": True}
    health = Health("vault", timeout=1)

    async def database() -> str:
        if not state["database"]:
            raise ConnectionError("connection refused")
        return "SELECT 1"

    health.add("database", database)
    health.mark_started()
    broker: NatsBroker = make_broker(nats_url, name="vault")
    broker.include_router(health_router("vault", lambda: health))
    await broker.start()
    try:
        yield state
    finally:
        await broker.stop()


async def test_live_answers_the_seed_fields(client: httpx.AsyncClient) -> None:
    resp = await client.get("/health/live")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "alive" and body["uptime"] >= 0 and body["version"] and body["timestamp"]


async def test_a_service_that_does_not_answer_or_is_unhealthy_degrades_the_gateway(
    client: httpx.AsyncClient, vault_health: dict[str, Any]
) -> None:
    for path in ("/health", "/health/ready"):
        resp = await client.get(path)
        assert resp.status_code == 200, resp.text  # degraded still serves
        body = resp.json()
        assert set(body) >= SEED_FIELDS and body["service"] == "gateway"
        assert body["status"] == "degraded"
        checks = body["checks"]
        assert checks["nats"]["status"] == "healthy" and checks["auth"]["status"] == "healthy"
        assert checks["service:vault"]["status"] == "healthy"
        assert body["services"]["vault"]["checks"]["database"]["status"] == "healthy"
        # the stand-ins answer no health: those services are unreachable as far as health goes
        assert checks["service:scheduler"]["status"] == "degraded"
        assert "no scheduler service is running" in checks["service:scheduler"]["detail"]
        assert "scheduler" not in body["services"]
    vault_health["database"] = False
    body = (await client.get("/health")).json()
    assert body["checks"]["service:vault"]["status"] == "degraded"
    assert "database: ConnectionError: connection refused" in body["checks"]["service:vault"]["detail"]
    assert body["services"]["vault"]["status"] == "unhealthy"
    metrics = (await client.get("/metrics")).text
    assert 'browserfleet_health_status{service="gateway"} 1.0' in metrics
    assert 'browserfleet_health_check_status{check="service:vault",service="gateway"} 1.0' in metrics
    vault_health["database"] = True
    body = (await client.get("/health")).json()
    assert body["checks"]["service:vault"]["status"] == "healthy"


async def test_without_auth_the_gateway_is_unhealthy(nats_url: str, gateway_nc: Any) -> None:
    app = create_app(GatewaySettings(nats_url=nats_url, health_timeout_seconds=1), nc=gateway_nc)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c,
    ):
        resp = await c.get("/health/ready")
        live = await c.get("/health/live")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["auth"]["status"] == "unhealthy" and body["checks"]["auth"]["critical"] is True
    assert body["checks"]["nats"]["status"] == "healthy"
    assert live.status_code == 200  # liveness asks nothing: no restart for a dependency's failure


async def test_before_the_lifespan_it_is_starting(nats_url: str) -> None:
    app = create_app(GatewaySettings(nats_url=nats_url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        resp = await c.get("/health/ready")
    assert resp.status_code == 503
    assert resp.json()["checks"]["lifecycle"]["detail"] == "starting"
