"""The gateway served by uvicorn on 127.0.0.1 for WebSocket tests (httpx's ASGI transport speaks no WebSocket),
on real NATS with the platform's streams; auth stood in by `FakeServices` (JWKS, API keys) as in conftest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
import websockets
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.auth import ApiKeyPrincipal, AuthenticateApiKeyRequest
from browserfleet_contracts.events import EventEnvelope, EventType
from browserfleet_core.errors import Unauthorized
from browserfleet_core.messaging import connect
from browserfleet_core.streams import ensure_streams
from browserfleet_gateway.app import create_app
from browserfleet_gateway.settings import GatewaySettings
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from websockets.asyncio.client import ClientConnection

from .conftest import FakeServices, Signer, gateway_settings

WAIT_CAP = 30.0  # hang protection only; nothing asserts on speed


@dataclass
class Served:
    url: str
    http: str
    nc: NatsClient
    js: JetStreamContext
    signer: Signer
    services: FakeServices
    settings: GatewaySettings
    app: Any = None
    server: Any = None
    api_keys: dict[str, ApiKeyPrincipal] = field(default_factory=dict)

    def connections(self) -> int:
        """Connections uvicorn still holds (white box: whether a dropped client was cut off)."""
        return len(self.server.server_state.connections)

    def sessions(self) -> list[Any]:
        """The gateway's open event-stream sessions (white box: which one a test socket is)."""
        return list(self.app.state.gateway.events.sessions)

    def token(self, *, org: str = "org-a", sub: str = "user-1", role: str = "viewer", ttl: int = 300) -> str:
        return self.signer.token(org=org, sub=sub, role=role, ttl=ttl)

    def api_key(self, org: str, scopes: list[str], expires_at: datetime | None = None) -> tuple[str, str]:
        """(raw key, key id) that the stood-in auth accepts."""
        key_id = uuid.uuid4().hex
        raw = f"sk_api_{uuid.uuid4().hex}"
        self.api_keys[raw] = ApiKeyPrincipal(
            key_id=key_id, org_id=org, scopes=scopes, plan="free", expires_at=expires_at
        )
        return raw, key_id

    async def connect(
        self, token: str | None = None, *, path: str = "/api/v1/events/ws", **kw: Any
    ) -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return await websockets.connect(f"{self.url}{path}", additional_headers=headers, **kw)

    async def publish(self, org: str, event: str, data: dict[str, Any]) -> int:
        """An event on EVENTS as a service would publish it; returns its stream sequence."""
        envelope = EventEnvelope(
            id=uuid.uuid4().hex,
            type=EventType(event),
            org_id=org,
            occurred_at=datetime.now(UTC),
            data=data,
        )
        ack = await self.js.publish(subjects.event(org, event), envelope.model_dump_json().encode())
        return int(ack.seq)

    async def publish_task(self, org: str, task_id: str, status: str = "created") -> int:
        return await self.publish(org, f"task.{status}", {"task_id": task_id, "status": status, "attempt": 1})


async def recv(ws: ClientConnection, timeout: float = WAIT_CAP) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return doc


async def recv_type(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of type `kind`, skipping others (hang-protected)."""
    while True:
        doc = await recv(ws)
        if doc["type"] == kind:
            return doc


async def subscribe(ws: ClientConnection, org: str, **fields: Any) -> dict[str, Any]:
    await recv_type(ws, "AUTHENTICATED")
    await ws.send(json.dumps({"type": "SUBSCRIBE", "channel": f"org:{org}", **fields}))
    return await recv_type(ws, "SUBSCRIBED")


async def closed_with(ws: ClientConnection) -> tuple[int | None, str, list[dict[str, Any]]]:
    """Reads until the server closes; (close code, reason, messages read before)."""
    seen: list[dict[str, Any]] = []
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT_CAP)))
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else ""), seen


@contextlib.asynccontextmanager
async def served(
    nats_url: str, signer: Signer, keys: dict[str, ApiKeyPrincipal] | None = None, **overrides: Any
) -> AsyncIterator[Served]:
    """`signer` and `keys`: pass another served gateway's while it runs (its stand-in auth answers too)."""
    nc = await connect(nats_url, name="ws-test")
    js = nc.jetstream()
    await ensure_streams(js)
    services = FakeServices(nc, signer)
    keys = {} if keys is None else keys

    async def authenticate_key(payload: dict[str, Any]) -> ApiKeyPrincipal:
        req = AuthenticateApiKeyRequest.model_validate(payload)
        if req.key not in keys:
            raise Unauthorized("invalid, revoked or expired API key", code="invalid_api_key")
        return keys[req.key]

    services.handlers[endpoints.Auth.AUTHENTICATE_API_KEY.subject] = authenticate_key
    await services.start()
    await nc.flush()  # the stand-ins are subscribed before the first socket asks them
    settings = gateway_settings(nats_url, rpc_timeout_seconds=5, **overrides)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_level="warning",
        ws_max_size=settings.ws_max_message_bytes,
        ws_per_message_deflate=settings.ws_per_message_deflate,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    state = app.state.gateway
    await asyncio.wait_for(state.events.hub.ready.wait(), WAIT_CAP)
    try:
        yield Served(
            url=f"ws://127.0.0.1:{port}",
            http=f"http://127.0.0.1:{port}",
            nc=nc,
            js=js,
            signer=signer,
            services=services,
            settings=settings,
            app=app,
            server=server,
            api_keys=keys,
        )
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_CAP)
        await services.stop()
        await nc.close()
