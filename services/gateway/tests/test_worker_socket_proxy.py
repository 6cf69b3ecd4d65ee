"""The gateway's `/workers/ws` when it cannot pass a remote worker through: no bridge configured, or the bridge
not listening. Both close 1013 (try again later) with the reason, which the worker answers with its backoff.
Pass-through itself runs against the whole platform (tests/seed_api/test_remote_worker.py)."""

from __future__ import annotations

import socket

import pytest
from browserfleet_contracts.worker_socket import SocketCloseCode
from browserfleet_gateway import workersocket
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect


def _app(upstream: str | None) -> FastAPI:
    app = FastAPI()

    @app.websocket("/workers/ws")
    async def proxied(ws: WebSocket) -> None:
        await workersocket.serve(ws, upstream)

    return app


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: a connection to it is refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("configured", [False, True])
def test_no_bridge_closes_1013_with_the_reason(configured: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKER_GATEWAY_WS_URL", raising=False)
    workersocket.upstream_url.cache_clear()
    upstream = f"ws://127.0.0.1:{_closed_port()}/workers/ws" if configured else None
    with (
        TestClient(_app(upstream)).websocket_connect("/workers/ws") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert closed.value.code == SocketCloseCode.TRY_AGAIN_LATER
    reason = "worker-gateway cannot be reached" if configured else "remote workers are not enabled"
    assert reason in closed.value.reason
