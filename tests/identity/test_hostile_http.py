"""Hostile HTTP against the real gateway process (uvicorn with `httpguard.GuardedHttpProtocol`, as `make dev`
and production run it), over raw sockets so nothing on the client side tidies the request: an oversized or
overlong head (431), a head or body that never finishes (408), too many connections from one address (429), an
oversized body (413), too many query parameters and too deeply nested JSON (400), a WebSocket frame past the
limit (close 1009). Each answer is the platform's error shape and closes the connection; the gateway still
serves afterwards. The timeouts are the short ones tests/identity/conftest.py sets."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from browserfleet_devkit.devstack import Platform

from .conftest import CONNECTIONS_PER_CLIENT

pytestmark = pytest.mark.e2e

# a refusal is awaited this long at most: far past the 2 s timeouts, so only a gateway that never answers fails
READ_CAP = 30.0


@contextmanager
def raw(platform: Platform) -> Iterator[socket.socket]:
    parts = urlsplit(platform.gateway_url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=READ_CAP)
    with closing(sock):
        yield sock


def answer(sock: socket.socket) -> tuple[int, dict[str, Any], bool]:
    """The status line's code, the JSON body, and whether the gateway then closed the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split(b" ")[1]), json.loads(body or b"{}"), True


def expect(sock: socket.socket, status: int, code: str) -> dict[str, Any]:
    got, body, closed = answer(sock)
    assert (got, body.get("error", {}).get("code")) == (status, code), body
    assert body["error"]["status"] == status and body["error"]["message"]
    assert closed
    return body


def still_serving(platform: Platform) -> None:
    assert httpx.get(f"{platform.gateway_url}/health/live", timeout=30).status_code == 200


def test_a_header_past_the_size_limit_is_431(platform: Platform) -> None:
    with raw(platform) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 200_000)  # never finished
        expect(sock, 431, "header_too_large")
    with raw(platform) as sock:
        sock.sendall(b"GET /health/live?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
        expect(sock, 431, "header_too_large")
    still_serving(platform)


def test_too_many_headers_is_431(platform: Platform) -> None:
    with raw(platform) as sock:
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gw\r\n" + lines + b"\r\n")
        expect(sock, 431, "too_many_headers")
    still_serving(platform)


def test_a_head_that_never_finishes_is_408(platform: Platform) -> None:
    with raw(platform) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gw\r\n")  # slow loris: the blank line never comes
        expect(sock, 408, "header_timeout")
    with raw(platform) as sock:  # a connection that never says anything
        expect(sock, 408, "header_timeout")


def test_a_body_that_never_finishes_is_408(platform: Platform) -> None:
    with raw(platform) as sock:
        sock.sendall(
            b"POST /auth/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"email": '
        )
        expect(sock, 408, "body_timeout")
    still_serving(platform)


def test_an_oversized_body_is_413(platform: Platform) -> None:
    with raw(platform) as sock:
        sock.sendall(b"POST /auth/login HTTP/1.1\r\nHost: gw\r\nContent-Length: 50000000\r\n\r\n")
        expect(sock, 413, "payload_too_large")
    with raw(platform) as sock:  # chunked: no length to judge up front, counted as it arrives
        chunk = b"x" * 65536
        sock.sendall(b"POST /auth/login HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(32):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-send; the answer is already in the socket's buffer
        expect(sock, 413, "payload_too_large")


def test_too_many_query_parameters_is_400(platform: Platform) -> None:
    query = "&".join(f"p{i}=1" for i in range(500))
    resp = httpx.get(f"{platform.gateway_url}/health/live?{query}", timeout=30)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "too_many_query_params"


@pytest.mark.parametrize("content_type", ["application/json", None])
def test_json_nested_too_deep_is_400(platform: Platform, content_type: str | None) -> None:
    # Python's parser recurses: without the limit this body ends in a RecursionError
    body = b'{"email": ' + b"[" * 100_000 + b"]" * 100_000 + b', "password": "x"}'
    headers = {"Content-Type": content_type} if content_type else {}
    resp = httpx.post(f"{platform.gateway_url}/auth/login", content=body, headers=headers, timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "json_too_deep"
    # brackets inside strings are text, not nesting
    fine = {"email": "[[[[" * 100, "password": "{{{{" * 100}
    resp = httpx.post(f"{platform.gateway_url}/auth/login", json=fine, timeout=30)
    assert resp.status_code == 422, resp.text  # the email is refused for what it is, not for depth


def test_one_address_cannot_hold_every_connection(platform: Platform) -> None:
    parts = urlsplit(platform.gateway_url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    held = [socket.create_connection(address, timeout=READ_CAP) for _ in range(CONNECTIONS_PER_CLIENT + 4)]
    try:
        refused = 0
        for sock in held:  # the admitted ones time out (408) in turn; the ones past the cap are 429 at once
            status, body, _ = answer(sock)
            if status == 429:
                assert body["error"]["code"] == "too_many_connections"
                refused += 1
            else:
                assert status == 408
        assert refused >= 4
    finally:
        for sock in held:
            sock.close()
    still_serving(platform)  # the count went back down as they closed


def test_a_websocket_frame_past_the_limit_closes_1009(platform: Platform) -> None:
    url = platform.gateway_url.replace("http://", "ws://") + "/api/v1/events/ws"

    async def send_huge() -> int | None:
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send("x" * 1_000_000)
            try:
                while True:  # frames the server sent before it read ours (a greeting) are skipped
                    await asyncio.wait_for(ws.recv(), READ_CAP)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None

    assert asyncio.run(send_huge()) == 1009
    still_serving(platform)
