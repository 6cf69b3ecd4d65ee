"""Pure ASGI middleware: request metrics, security headers, a last-resort 500, and the body-size limit.

Pure ASGI rather than `BaseHTTPMiddleware` so streamed responses (artifact downloads) stay streamed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ErrorResponse

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
# where a WebSocket's scope carries its connection's abort (see EdgeMiddleware)
ABORT_SCOPE_KEY = "browserfleet.abort"


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
        if scope["type"] == "websocket":
            # uvicorn's `send` is a method of the connection's protocol object; its transport's `abort` lets a
            # socket cut a client that stopped reading, which no close frame can reach (ASGI has no word for
            # it). Under another server there is none, and such a client is left to TCP.
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            abort = getattr(transport, "abort", None)
            if callable(abort):
                scope[ABORT_SCOPE_KEY] = abort
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
                latency = _labelled(_LATENCIES, LATENCY, (scope["method"], _route(scope)))
                latency.observe(time.perf_counter() - started)
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
            _labelled(_COUNTS, REQUESTS, (scope["method"], _route(scope), str(status))).inc()


# each label set's child, kept: `labels()` (its checks and lock) per request was ~2 % of a read's CPU
_LATENCIES: dict[tuple[str, ...], Any] = {}
_COUNTS: dict[tuple[str, ...], Any] = {}
_MAX_CHILDREN = 4096  # a client chooses the method: the cache is bounded, the metric is what it was


def _labelled(children: dict[tuple[str, ...], Any], metric: Any, labels: tuple[str, ...]) -> Any:
    child = children.get(labels)
    if child is None:
        if len(children) >= _MAX_CHILDREN:
            children.clear()
        child = children[labels] = metric.labels(*labels)
    return child


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else "unmatched"


# what the connection's and the request shape's limits answer on any route (httpguard, BodyLimitMiddleware),
# as the error body every route documents: part of each operation's contract
HOSTILE_HTTP_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 408, 413, 429, 431)
}


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`, decided before anything parses them; 400 for more than
    `max_query_params` query parameters or a JSON body nested deeper than `max_json_depth` (Python's parser
    recurses: a body of 100 000 `[` would otherwise end in a RecursionError, a 500).

    Content-Length is checked up front; chunked bodies (no Content-Length) are counted as they arrive and
    buffered, which is cheap at this limit and means no parser ever sees a byte past it.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, max_query_params: int = 100, max_json_depth: int = 64
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_query_params = max_query_params
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if query and query.count(b"&") + query.count(b";") >= self.max_query_params:
            reason = f"more than {self.max_query_params} query parameters"
            await _send_error(send, 400, "too_many_query_params", reason)
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
        body = b"".join(chunks)
        if _is_json(scope) and json_depth(body, self.max_json_depth) > self.max_json_depth:
            reason = f"the JSON body is nested deeper than {self.max_json_depth} levels"
            await _send_error(send, 400, "json_too_deep", reason)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _send_error(send, 413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes")


# a string, possessive (no backtracking); an unterminated one runs to the end (never a failed match, which
# finditer would retry from every later quote: quadratic)
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would parse the body as JSON: no Content-Type, or a `*/json` or `*/*+json` one."""
    for key, value in scope.get("headers", []):
        if key == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            subtype = media.partition(b"/")[2]
            return subtype == b"json" or subtype.endswith(b"+json")
    return True


def json_depth(body: bytes, stop_past: int = 1 << 30) -> int:
    """How deep `body`'s arrays and objects nest (counting stops past `stop_past`), without parsing: strings
    are skipped, so a bracket inside one does not count. Malformed JSON may count wrong; the parser refuses
    it after."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_past:
                    break
        else:
            depth -= 1
    return deepest


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    start, body = _error_message(status, code, message)
    start["headers"].append((b"connection", b"close"))
    await send(start)
    await send(body)
