"""worker-gateway's WebSocket for remote workers (`/workers/ws`, WORKER_SOCKET_PORT): the gateway proxies its
public `/workers/ws` here, so a worker needs only the gateway's URL. Each socket is a `WorkerSession`; the
newest socket of a worker replaces an older one, and a removed worker's socket is closed at once (the
`workers.revoked` broadcast; its bus connection is also cut by the callout's kick)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from browserfleet_contracts import subjects
from browserfleet_contracts.worker_socket import MAX_SOCKET_FRAME_BYTES, PATH, SocketCloseCode
from browserfleet_contracts.workers import WorkerRevoked
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Gauge
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from .runtime import WorkerGatewayRuntime
from .socket_session import WorkerSession

log = logging.getLogger(__name__)

SOCKETS = Gauge("browserfleet_worker_sockets", "Remote workers' sockets open on this replica")


class WorkerSocketServer:
    def __init__(self, rt: WorkerGatewayRuntime) -> None:
        self.rt = rt
        self.sessions: dict[str, WorkerSession] = {}  # by worker id: the newest socket of each worker
        self._open: set[WorkerSession] = set()
        self._server: Server | None = None
        self._revoked: Subscription | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        settings = self.rt.settings
        assert settings.worker_socket_port is not None
        self._server = await serve(
            self._serve,
            settings.worker_socket_host,
            settings.worker_socket_port,
            process_request=_only_the_path,
            max_size=MAX_SOCKET_FRAME_BYTES,
            ping_interval=settings.worker_socket_ping_seconds,
            ping_timeout=settings.worker_socket_ping_seconds,
            close_timeout=5,
        )
        self._revoked = await self.rt.broker.connection.subscribe(
            subjects.WORKER_REVOKED, cb=self._on_revoked
        )
        log.info("remote workers' WebSocket on %s:%d%s", settings.worker_socket_host, self.port, PATH)

    async def stop(self) -> None:
        """Every worker is told to go elsewhere (1001): it reconnects, and resumes its tasks, on a replica that
        is up (or on this one once it is back), within its tasks' leases."""
        if self._revoked is not None:
            with contextlib.suppress(Exception):
                await self._revoked.unsubscribe()
        if self._server is None:
            return
        self._server.close(close_connections=False)
        await asyncio.gather(
            *(s.close(SocketCloseCode.GOING_AWAY, "worker-gateway is stopping") for s in list(self._open)),
            return_exceptions=True,
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 10)

    async def _serve(self, ws: ServerConnection) -> None:
        if len(self._open) >= self.rt.settings.worker_socket_max_connections:
            await ws.close(
                SocketCloseCode.TRY_AGAIN_LATER, "this worker-gateway serves as many workers as it may"
            )
            return
        session = WorkerSession(self.rt, ws, self.sessions)
        self._open.add(session)
        SOCKETS.set(len(self._open))
        try:
            await session.serve()
        finally:
            self._open.discard(session)
            SOCKETS.set(len(self._open))

    async def _on_revoked(self, msg: Msg) -> None:
        try:
            notice = WorkerRevoked.model_validate_json(msg.data)
        except ValueError:
            return
        session = self.sessions.get(notice.worker_id)
        if session is not None:
            log.info("closing the socket of removed worker %s", notice.worker_id)
            await session.close(SocketCloseCode.UNAUTHORIZED, "this worker was removed")


def _only_the_path(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?", 1)[0] != PATH:
        return connection.respond(404, f"remote workers connect to {PATH}\n")
    return None
