"""Logging, Prometheus and OpenTelemetry setup shared by every service."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .settings import ServiceSettings

# OpenTelemetry (its SDK above all) is imported only where tracing is on: most processes run without it

_tracing_enabled = False


class SecretMask(logging.Filter):
    """Replaces every registered secret value with *** in every log record of the process.

    The worker registers the values it receives from the vault; masking at the handler level means no
    code path (a library's own log line included) can print one.
    """

    _values: set[str] = set()
    _lock = threading.Lock()

    @classmethod
    def register(cls, *values: str) -> None:
        with cls._lock:
            cls._values.update(v for v in values if v)

    @classmethod
    def forget(cls, *values: str) -> None:
        with cls._lock:
            cls._values.difference_update(values)

    @classmethod
    def mask(cls, text: str) -> str:
        # longest first, so a secret that contains another is masked whole
        for value in sorted(cls._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._values:
            record.msg = self.mask(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text or record.exc_info:
            data["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(data)


def configure_logging(settings: ServiceSettings) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(SecretMask())
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # per-message chatter from these libraries costs more than it tells
    for noisy in ("httpx", "httpcore", "faststream", "nats", "sqlalchemy.engine", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def start_metrics_server(settings: ServiceSettings) -> int | None:
    """Serve /metrics and the service's health (`browserfleet_core.health`: /health/live, /health,
    /health/ready) on `METRICS_PORT` (0 picks a free port). Returns the bound port."""
    if settings.metrics_port is None:
        return None
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in settings.metrics_host else socket.AF_INET

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no lines
            pass

    server = make_server(
        settings.metrics_host, settings.metrics_port, ops_app(), Server, handler_class=QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    port = int(server.server_address[1])
    logging.getLogger(__name__).info(
        "metrics and health on http://%s:%d (/metrics, /health/live, /health/ready)",
        settings.metrics_host,
        port,
    )
    return port


def ops_app() -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """The metrics port's WSGI app: /metrics (the checks run first, so the health gauges are as fresh as the
    scrape), /health/live, /health and /health/ready (the installed `Health`; 503 while starting)."""
    from prometheus_client import REGISTRY, make_wsgi_app

    from . import health

    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        found = health.installed()
        if path == "/metrics":
            if found is not None:
                found.evaluate_from_thread()
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/health/live":
            live = found.liveness() if found is not None else {"status": "alive"}
            return _json(start_response, 200, json.dumps(live).encode())
        if path in ("/health", "/health/ready"):
            if found is None:
                return _json(start_response, 503, b'{"status": "unhealthy", "detail": "starting"}')
            report = found.evaluate_from_thread()
            return _json(start_response, health.http_status(report), health.report_json(report))
        return _json(
            start_response, 404, b'{"detail": "not found: /metrics, /health, /health/live, /health/ready"}'
        )

    return app


def _json(start_response: Any, status: int, body: bytes) -> list[bytes]:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    start_response(
        f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def configure_tracing(settings: ServiceSettings) -> None:
    global _tracing_enabled
    if settings.otel_exporter == "none":
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.otel_exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError as exc:  # pragma: no cover - depends on deployment image
            raise RuntimeError("OTEL_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http") from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint)))
    trace.set_tracer_provider(provider)
    _tracing_enabled = True


def tracing_middleware() -> Any:
    if not _tracing_enabled:
        return None
    from faststream.nats.opentelemetry import NatsTelemetryMiddleware
    from opentelemetry import trace

    return NatsTelemetryMiddleware(tracer_provider=trace.get_tracer_provider())


def inject_trace_headers(headers: dict[str, str]) -> None:
    if _tracing_enabled:
        from opentelemetry import propagate

        propagate.inject(headers)


def setup(settings: ServiceSettings) -> int | None:
    configure_logging(settings)
    configure_tracing(settings)
    return start_metrics_server(settings)
