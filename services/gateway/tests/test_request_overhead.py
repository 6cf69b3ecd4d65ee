"""Work the gateway must not do per request, checked on the app alone (no lifespan, no services: what is
counted happens before a route would need them): FastAPI's own OpenTelemetry asking for providers that
cannot be there, the package's metadata read for /health/live, and the route table and middleware stack
built by the first request instead of before the heap is frozen, a system call per request id."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import MutableMapping
from importlib import metadata
from typing import Any

import pytest
from browserfleet_gateway import audittrail
from browserfleet_gateway.app import create_app, native_telemetry, prebuild
from fastapi import FastAPI
from opentelemetry import _logs, metrics, trace

from .conftest import gateway_settings


async def _get(app: FastAPI, path: str) -> int:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gateway")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_native_telemetry_is_on_exactly_when_a_provider_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "nats://127.0.0.1:4222"
    assert native_telemetry(gateway_settings(url)) == {"tracing": False, "metrics": False, "logs": False}
    assert native_telemetry(gateway_settings(url, otel_exporter="console")) is None  # FastAPI's defaults
    assert native_telemetry(gateway_settings(url, otel_exporter="otlp")) is None
    monkeypatch.setenv("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider")
    assert native_telemetry(gateway_settings(url)) is None


async def test_a_request_neither_asks_for_telemetry_providers_nor_reads_package_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(gateway_settings("nats://127.0.0.1:4222"))
    asked: list[str] = []

    def counted(name: str, real: Any) -> Any:
        def call(*args: Any) -> Any:
            asked.append(name)
            return real(*args)

        return call

    for module, name in ((trace, "get_tracer_provider"), (metrics, "get_meter_provider")):
        monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
    monkeypatch.setattr(_logs, "get_logger_provider", counted("logs", _logs.get_logger_provider))
    monkeypatch.setattr(metadata, "version", counted("metadata", metadata.version))
    assert await _get(app, "/health/live") == 200
    assert asked == []


async def test_prebuilt_an_app_builds_next_to_nothing_at_its_first_request() -> None:
    app = create_app(gateway_settings("nats://127.0.0.1:4222"))
    prebuild(app)
    assert app.middleware_stack is not None
    gc.collect()
    before = len(gc.get_objects())
    assert await _get(app, "/health/live") == 200
    gc.collect()
    # the route table alone is ~30,000 objects; a request itself leaves a few hundred (metric children)
    assert len(gc.get_objects()) - before < 3_000


def test_request_ids_are_random_uuid4s_drawn_in_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[int] = []
    real_urandom = os.urandom

    def urandom(n: int) -> bytes:
        draws.append(n)
        return real_urandom(n)

    monkeypatch.setattr(os, "urandom", urandom)
    scope: dict[str, Any] = {}
    ids = []
    for _ in range(200):
        scope.pop(audittrail.REQUEST_ID_KEY, None)
        ids.append(audittrail.request_id(scope))
    assert len(set(ids)) == 200
    for rid in ids:
        parsed = uuid.UUID(hex=rid)
        assert parsed.hex == rid and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert len(draws) <= 2  # not a system call per request
    # a forked child (another pid) draws its own bytes: it never repeats its parent's next ids
    monkeypatch.setattr(os, "getpid", lambda: -1)
    drawn = len(draws)
    scope.pop(audittrail.REQUEST_ID_KEY, None)
    audittrail.request_id(scope)
    assert len(draws) == drawn + 1
