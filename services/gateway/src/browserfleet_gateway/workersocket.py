"""The public `/workers/ws`: remote workers' sockets, passed through to worker-gateway's bridge
(WORKER_GATEWAY_WS_URL; docs/websocket.md "Remote workers").

The gateway understands none of the protocol (browserfleet_contracts.worker_socket): the worker's key is
checked by worker-gateway, every frame is carried as it came (text as text, an artifact's binary chunks as
bytes), and the bridge's close code and reason reach the worker unchanged (4401 for a refused key). So a
worker needs the gateway's URL only, and the bridge stays off the public network. Frames larger than the
protocol allows are refused by the bridge (1009), not buffered here twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

import websockets
from browserfleet_contracts.worker_socket import MAX_SOCKET_FRAME_BYTES, SocketCloseCode
from fastapi import WebSocket
from pydantic import Field
from pydantic_settings import BaseSettings
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
# close codes a peer may receive but nobody may send (no status, abnormal, TLS): the worker hears "go away"
_UNSENDABLE = frozenset({1005, 1006, 1015})


class WorkerSocketSettings(BaseSettings):
    """Where worker-gateway's bridge listens; unset, this gateway has no remote workers (1013)."""

    worker_gateway_ws_url: str | None = Field(
        default=None,
        pattern=r"^wss?://",
        description="worker-gateway's remote-worker socket, e.g. ws://worker-gateway:8766/workers/ws",
    )


@functools.cache
def upstream_url() -> str | None:
    return WorkerSocketSettings().worker_gateway_ws_url


async def serve(ws: WebSocket, upstream: str | None = None) -> None:
    await ws.accept()
    target = upstream or upstream_url()
    if target is None:
        await _close(ws, SocketCloseCode.TRY_AGAIN_LATER, "remote workers are not enabled on this platform")
        return
    client = ws.client.host if ws.client is not None else ""
    try:
        bridge = await websockets.connect(
            target,
            additional_headers={"X-Forwarded-For": client},
            max_size=MAX_SOCKET_FRAME_BYTES,
            open_timeout=CONNECT_TIMEOUT_SECONDS,
            # the bridge's pings are answered here; uvicorn pings the worker's side (a silent worker is cut
            # off there, and this connection with it)
            ping_interval=None,
            compression=None,
        )
    except Exception as exc:  # down, restarting, or not listening yet: the worker retries with backoff
        log.warning("remote worker from %s: worker-gateway's socket cannot be reached (%s)", client, exc)
        await _close(ws, SocketCloseCode.TRY_AGAIN_LATER, "worker-gateway cannot be reached now; retry")
        return
    try:
        to_bridge = asyncio.create_task(_worker_to_bridge(ws, bridge))
        to_worker = asyncio.create_task(_bridge_to_worker(bridge, ws))
        done, pending = await asyncio.wait({to_bridge, to_worker}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("remote worker socket from %s ended: %r", client, task.exception())
    finally:
        with contextlib.suppress(Exception):
            await bridge.close()
        await _close(ws, SocketCloseCode.GOING_AWAY, "the gateway ended this socket")


async def _worker_to_bridge(ws: WebSocket, bridge: ClientConnection) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            code = int(message.get("code") or 1000)
            await bridge.close(code if code not in _UNSENDABLE else 1000)
            return
        text, data = message.get("text"), message.get("bytes")
        try:
            if text is not None:
                await bridge.send(text)
            elif data is not None:
                await bridge.send(data)
        except ConnectionClosed:
            return  # the bridge closed: the other pump passes its code on


async def _bridge_to_worker(bridge: ClientConnection, ws: WebSocket) -> None:
    try:
        async for frame in bridge:
            if isinstance(frame, str):
                await ws.send_text(frame)
            else:
                await ws.send_bytes(frame)
    except ConnectionClosed:
        pass
    code = bridge.close_code
    if code is None or code in _UNSENDABLE:
        await _close(ws, SocketCloseCode.GOING_AWAY, "worker-gateway went away; reconnect")
    else:
        await _close(ws, code, bridge.close_reason or "")


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await ws.close(code, reason[:120])
