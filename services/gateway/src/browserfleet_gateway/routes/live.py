"""The live view of a running task over WebSocket (`/api/v1/tasks/{task_id}/live`). The protocol is
docs/liveview.md; one socket is `livesocket`, the fan-out per task is `liveview`."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from .. import livesocket
from ..runtime import GatewayState

router = APIRouter(tags=["tasks"])


@router.websocket("/api/v1/tasks/{task_id}/live", name="task_live")
async def task_live(websocket: WebSocket, task_id: str) -> None:
    """Watch a running task's browser: JPEG frames while it runs (docs/liveview.md)."""
    state = getattr(websocket.app.state, "gateway", None)
    await livesocket.serve(websocket, state if isinstance(state, GatewayState) else None, task_id)
