"""Remote workers' socket (`/workers/ws`): passed through to worker-gateway, which checks the worker's key
(docs/websocket.md "Remote workers"; the protocol is browserfleet_contracts.worker_socket)."""

from __future__ import annotations

from browserfleet_contracts.worker_socket import PATH
from fastapi import APIRouter, WebSocket

from .. import workersocket

router = APIRouter(tags=["workers"])


@router.websocket(PATH, name="worker_socket")
async def worker_socket(websocket: WebSocket) -> None:
    """A remote worker's connection: WORKER_CONNECT with its key first, then tasks (docs/websocket.md)."""
    await workersocket.serve(websocket)
