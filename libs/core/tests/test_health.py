"""browserfleet_core.health on real NATS and PostgreSQL: how checks make a status (a failing critical check is
unhealthy, a failing other one or a `Degraded` finding degraded, an overrun budget a failure), the probes
against the real things (a database that is not there, a consumer behind, a service that does not answer or
is unhealthy), the bus answer without the downstream checks, and the metrics port's /health/live, /health,
/health/ready and /metrics as Kubernetes and Prometheus read them."""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Empty
from browserfleet_core import health as health_mod
from browserfleet_core.breaker import Breakers
from browserfleet_core.db import Database
from browserfleet_core.health import (
    Degraded,
    Health,
    consumer_lag_probe,
    database_probe,
    downstream_queues,
    health_router,
    nats_probe,
    service_health,
)
from browserfleet_core.messaging import RpcClient, connect, make_broker
from browserfleet_core.observability import start_metrics_server
from browserfleet_core.settings import ServiceSettings
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig, StreamConfig


async def ok() -> str:
    return "fine"


async def fails() -> str:
    raise ConnectionError("refused")


async def behind() -> str:
    raise Degraded("300 pending")


@dataclass
class DatabaseCheck:
    """A database check the test takes down (`up = False`): it fails with `error` until brought back."""

    error: str
    up: bool = True

    async def __call__(self) -> str:
        if not self.up:
            raise ConnectionError(self.error)
        return "SELECT 1"


async def hangs() -> str:
    await asyncio.sleep(60)
    return "never"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await connect(nats_url, name="health-test")
    yield client
    await client.close()


async def test_the_status_is_the_worst_check() -> None:
    health = Health("scheduler", timeout=0.2)
    health.add("a", ok)
    health.mark_started()
    assert (await health.evaluate()).status == "healthy"
    health.add("lag", behind, critical=False)
    report = await health.evaluate()
    assert report.status == "degraded" and report.checks["lag"].detail == "300 pending"
    health.add("downstream", fails, critical=False)
    assert (await health.evaluate()).checks["downstream"].status == "degraded"
    health.add("slow", hangs)
    report = await health.evaluate()
    assert report.status == "unhealthy"
    assert report.checks["slow"].detail == "no answer within 0.2 s"
    assert report.checks["a"].status == "healthy"
    # the seed's fields
    assert report.uptime >= 0 and report.version and report.timestamp.tzinfo is not None


async def test_starting_and_stopping_are_unhealthy() -> None:
    health = Health("vault")
    health.add("a", ok)
    report = await health.evaluate()
    assert report.status == "unhealthy" and report.checks["lifecycle"].detail == "starting"
    health.mark_started()
    assert (await health.evaluate()).status == "healthy"
    health.mark_stopping()
    assert (await health.evaluate()).checks["lifecycle"].detail == "stopping"


async def test_database_probe_on_a_real_database_and_on_none(database_url: str) -> None:
    up = Database(database_url, "public", pool_size=1)
    down = Database("postgresql://nobody@127.0.0.1:1/none", "public", pool_size=1)
    health = Health("auth", timeout=5)
    health.add("database", database_probe(up))
    health.add("other_database", database_probe(down))
    health.mark_started()
    try:
        report = await health.evaluate()
    finally:
        await up.dispose()
        await down.dispose()
    assert report.checks["database"].status == "healthy", report
    assert report.checks["other_database"].status == "unhealthy"
    assert "OperationalError" in report.checks["other_database"].detail
    assert report.status == "unhealthy"


async def test_nats_probe(nc: NatsClient) -> None:
    health = Health("auth")
    health.add("nats", nats_probe(lambda: nc))
    health.add("none", nats_probe(lambda: None))
    health.mark_started()
    report = await health.evaluate()
    assert report.checks["nats"].status == "healthy" and "connected to" in report.checks["nats"].detail
    assert report.checks["none"].status == "unhealthy"
    await nc.close()
    closed = await health.evaluate()
    assert closed.checks["nats"].status == "unhealthy" and closed.checks["nats"].detail.endswith(
        "disconnected"
    )


async def test_consumer_lag_degrades_above_the_limit(nc: NatsClient) -> None:
    js = nc.jetstream()
    stream = f"HEALTH{secrets.token_hex(3).upper()}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"]))
    await js.add_consumer(stream, ConsumerConfig(durable_name="reader"))
    health = Health("webhooks")
    health.add("lag", consumer_lag_probe(lambda: nc, stream, "reader", max_pending=3), critical=False)
    health.add("missing", consumer_lag_probe(lambda: nc, stream, "nobody", max_pending=3), critical=False)
    health.mark_started()
    for i in range(3):
        await js.publish(f"{stream.lower()}.x", str(i).encode())
    report = await health.evaluate()
    assert report.checks["lag"].status == "healthy" and report.checks["lag"].detail.startswith("3 pending")
    assert report.checks["missing"].status == "degraded"  # a consumer that is gone: not critical, reported
    await js.publish(f"{stream.lower()}.x", b"4")
    report = await health.evaluate()
    assert report.checks["lag"].status == "degraded" and "more than 3 behind" in report.checks["lag"].detail
    assert report.status == "degraded"
    await js.delete_stream(stream)


async def test_a_service_it_calls_is_asked_over_the_bus(nats_url: str, nc: NatsClient) -> None:
    """The scheduler's view of worker-gateway: degraded while nothing answers svc.workers.health, healthy
    once it answers healthy, degraded again when it answers unhealthy. The bus answer leaves out the
    downstream checks (no circle)."""
    assert downstream_queues("scheduler") == ["worker-gateway"]
    assert downstream_queues("webhooks") == []
    rpc = RpcClient(nc, timeout=2)
    scheduler = service_health("scheduler", nats=lambda: nc, rpc=lambda: rpc, timeout=1)
    scheduler.mark_started()
    report = await scheduler.evaluate()
    assert report.checks["service:worker-gateway"].status == "degraded", report
    assert "no worker-gateway service is running" in report.checks["service:worker-gateway"].detail

    downstream = Health("worker-gateway")
    database = DatabaseCheck("database is down")
    downstream.add("database", database)
    downstream.add("service:scheduler", fails, critical=False, downstream=True)
    downstream.mark_started()
    broker = make_broker(nats_url, name="worker-gateway")
    broker.include_router(health_router("worker-gateway", lambda: downstream))
    await broker.start()
    # its SUBs went out on its own connection: a PING round trip makes sure the server has them before we ask
    await broker.connection.flush()
    try:
        answer = await rpc.call(endpoints.Workers.HEALTH, Empty())
        assert set(answer.checks) == {"database"} and answer.status == "healthy"
        assert (await scheduler.evaluate()).status == "healthy"
        database.up = False
        report = await scheduler.evaluate()
        assert report.status == "degraded"
        assert "database is down" in report.checks["service:worker-gateway"].detail
        # its own bus answer has no downstream checks, the report on its metrics port has them all
        assert set((await scheduler.evaluate(own_only=True)).checks) == {"nats"}
    finally:
        await broker.stop()


async def test_an_open_breaker_degrades() -> None:
    board = Breakers()
    health = service_health("gateway", nats=lambda: None, breakers=lambda: board)
    health.mark_started()
    assert (await health.evaluate()).checks["breakers"].status == "healthy"
    breaker = board.get("service:scheduler", failures=1)
    breaker.failure()
    report = await health.evaluate()
    assert report.checks["breakers"].status == "degraded"
    assert report.checks["breakers"].detail == "open: service:scheduler"


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - a 127.0.0.1 URL the test built
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


async def test_the_metrics_port_serves_health() -> None:
    settings = ServiceSettings(nats_url="nats://unused.invalid:4222", metrics_port=0)
    port = start_metrics_server(settings)
    base = f"http://127.0.0.1:{port}"
    health_mod._installed.clear()
    status, body = await asyncio.to_thread(_get, f"{base}/health/ready")
    assert status == 503 and body["status"] == "unhealthy"
    health = health_mod.install(Health("webhooks", timeout=1))
    database = DatabaseCheck("connection refused")
    health.add("database", database)
    health.add("lag", behind, critical=False)
    status, body = await asyncio.to_thread(_get, f"{base}/health/ready")
    assert status == 503 and body["checks"]["lifecycle"]["detail"] == "starting"
    health.mark_started()
    try:
        for path in ("/health", "/health/ready"):
            status, body = await asyncio.to_thread(_get, base + path)
            assert status == 200 and body["status"] == "degraded", (path, body)
            assert {"service", "status", "timestamp", "uptime", "version", "checks"} <= set(body)
        database.up = False
        status, body = await asyncio.to_thread(_get, f"{base}/health/ready")
        assert status == 503 and body["status"] == "unhealthy"
        assert body["checks"]["database"]["detail"] == "ConnectionError: connection refused"
        status, live = await asyncio.to_thread(_get, f"{base}/health/live")
        assert status == 200 and live["status"] == "alive" and live["uptime"] >= 0
        status, metrics = await asyncio.to_thread(_get, f"{base}/metrics")
        assert status == 200
        assert 'browserfleet_health_status{service="webhooks"} 2.0' in metrics
        assert 'browserfleet_health_check_status{check="lag",service="webhooks"} 1.0' in metrics
        database.up = True
        status, metrics = await asyncio.to_thread(_get, f"{base}/metrics")
        assert 'browserfleet_health_status{service="webhooks"} 1.0' in metrics
        status, _ = await asyncio.to_thread(_get, f"{base}/healthz")
        assert status == 404
    finally:
        health_mod._installed.clear()
