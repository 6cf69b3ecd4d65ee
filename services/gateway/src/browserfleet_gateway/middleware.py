"""Pure ASGI middleware: request metrics, security headers, a last-resort 500, and the body-size limit.

Pure ASGI rather than `BaseHTTPMiddleware` so streamed responses (artifact downloads) stay streamed.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# Module-level so several apps in one process (tests, `openapi()`) share one registration.
REQUESTS = Counter(
    "browserfleet_gateway_http_requests_total",
    "HTTP requests answered by the gateway",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "browserfleet_gateway_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response headers are sent, for streamed bodies)",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_NO_STORE_PREFIXES = ("/auth", "/api")


def _error_message(status: int, code: str, message: str) -> tuple[Message, Message]:
    body = json.dumps(
        {"error": {"status": status, "code": code, "message": message, "field": None, "detail": None}}
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class EdgeMiddleware:
    """Outermost layer: every response gets the security headers and is counted by route *template*
    (never the raw path, which would explode label cardinality); an exception that escaped every handler
    becomes a bare 500 here, so even that answer carries the headers and the error shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False
        path: str = scope.get("path", "")
        no_store = path.startswith(_NO_STORE_PREFIXES)

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend(h for h in _SECURITY_HEADERS if h[0] not in present)
                if no_store and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
                LATENCY.labels(scope["method"], _route(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), _route(scope))
            if not response_started:
                start, body = _error_message(500, "internal_error", "internal error")
                await send_wrapper(start)
                await send_wrapper(body)
            status = 500
        finally:
            REQUESTS.labels(scope["method"], _route(scope), str(status)).inc()


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else "unmatched"


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`, decided before anything parses them.

    Content-Length is checked up front; chunked bodies (no Content-Length) are counted as they arrive and
    buffered, which is cheap at this limit and means no parser ever sees a byte past it.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(send, 400, "bad_request", "invalid Content-Length")
                    return
                if declared > self.max_bytes:
                    await self._too_large(send)
                    return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away while sending
                return
            chunk: bytes = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _send_error(send, 413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes")


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    start, body = _error_message(status, code, message)
    start["headers"].append((b"connection", b"close"))
    await send(start)
    await send(body)
