"""Wiring: settings, NATS, the RPC client, the JWKS verifier, middleware and routers.

`create_app()` connects nothing; the lifespan does. That keeps `openapi()` usable without a running
platform, and lets tests hand in their own NATS connection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.auth import Jwks
from browserfleet_contracts.common import Empty
from browserfleet_core.breaker import Breakers
from browserfleet_core.messaging import RpcClient, connect
from browserfleet_core.security import JwksVerifier
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from nats.aio.client import Client as NatsClient
from starlette.routing import NoMatchFound

from .audittrail import AuditMiddleware
from .errors import install_error_handlers
from .eventstream.service import EventStream
from .hotcreate import HotCreates
from .hotreads import HotReads
from .keycache import ApiKeyCache
from .liveview import LiveHub
from .middleware import HOSTILE_HTTP_ERRORS, BodyLimitMiddleware, EdgeMiddleware
from .ratelimit import Limiter, open_bucket
from .routes import ROUTERS
from .runtime import GatewayState
from .settings import GatewaySettings
from .static import install_static
from .upstream import GuardedRpc
from .userstate import UserStateCache

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def create_app(
    settings: GatewaySettings | None = None,
    *,
    nc: NatsClient | None = None,
    rpc: RpcClient | None = None,
) -> FastAPI:
    """`nc` / `rpc` are injectable for tests; an injected connection is the caller's to close."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_nc = nc is None
        conn = nc if nc is not None else await connect(settings.nats_url, name=settings.service_name)
        # a test hands in its own GuardedRpc (with its clock): health then shows that one's breakers
        board = rpc.board if isinstance(rpc, GuardedRpc) else Breakers()
        client = rpc or GuardedRpc(
            conn,
            timeout=settings.rpc_timeout_seconds,
            board=board,
            failures=settings.service_breaker_failures,
            cooldown_seconds=settings.service_breaker_cooldown_seconds,
        )

        async def fetch_jwks() -> dict[str, Any]:
            jwks: Jwks = await client.call(endpoints.Auth.JWKS, Empty())
            return jwks.model_dump()

        verifier = JwksVerifier(fetch_jwks, min_refresh_seconds=settings.jwks_min_refresh_seconds)
        store = None
        if settings.rate_limit_store == "nats":
            store = await open_bucket(conn, timeout=settings.rate_limit_store_timeout_seconds)
        reopen_store = partial(open_bucket, conn, timeout=settings.rate_limit_store_timeout_seconds)
        store_breaker = board.get(f"nats-kv:{subjects.RATE_LIMITS_BUCKET}", failures=3, cooldown_seconds=5.0)
        limiter = Limiter(
            store,
            settings.rate_limit_per_second,
            settings.rate_limit_burst,
            prefix="principal",
            breaker=store_breaker,
            reopen=reopen_store,
        )
        login_limiter = Limiter(
            store,
            settings.login_rate_per_second,
            settings.login_burst,
            prefix="login",
            breaker=store_breaker,
            reopen=reopen_store,
        )
        api_keys = ApiKeyCache(settings.api_key_cache_seconds)
        await api_keys.subscribe(conn)  # revocations from auth reach every replica at once
        users = UserStateCache(settings.user_state_cache_seconds)
        await users.subscribe(conn)  # deactivations, role changes and MFA resets likewise
        events = EventStream(conn, settings)
        await events.start()
        live = LiveHub(conn, settings)
        await live.start()
        app.state.gateway = GatewayState(
            settings=settings,
            nc=conn,
            rpc=client,
            verifier=verifier,
            limiter=limiter,
            login_limiter=login_limiter,
            api_keys=api_keys,
            users=users,
            events=events,
            live=live,
            breakers=board,
            probe_rpc=RpcClient(conn, timeout=settings.rpc_timeout_seconds),
        )
        log.info("gateway ready on NATS %s", settings.nats_url)
        try:
            yield
        finally:
            app.state.gateway = None
            await events.stop()
            await live.stop()
            if own_nc and not conn.is_closed:
                await conn.drain()

    app = FastAPI(
        title="browserfleet",
        version=VERSION,
        summary="Browser automation for many teams: tasks, credentials, webhooks and workers.",
        lifespan=lifespan,
        # served by install_static from this gateway's own files: the default pages load a CDN
        docs_url=None,
        redoc_url=None,
        responses=HOSTILE_HTTP_ERRORS,  # any route: the connection's limits answer before a route is chosen
        telemetry=native_telemetry(settings),
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_static(app, settings)
    # add_middleware wraps: the last one added is the outermost.
    limits = settings.http_limits
    app.add_middleware(HotCreates)  # innermost with HotReads: every layer below still wraps what they serve
    app.add_middleware(HotReads)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        max_query_params=limits.max_query_params,
        max_json_depth=limits.max_json_depth,
    )
    if settings.cors_origins:
        wildcard = "*" in settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            # Bearer tokens need no cookies; credentials are never combined with a wildcard origin.
            allow_credentials=not wildcard,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=[
                "Location",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
            max_age=600,
        )
    app.add_middleware(EdgeMiddleware)
    app.add_middleware(AuditMiddleware)  # outermost: names every call and closes its audit entry
    return app


# what makes OpenTelemetry's API load a provider of its own at its first use (no setting of ours)
_OTEL_PROVIDER_ENV = (
    "OTEL_PYTHON_TRACER_PROVIDER",
    "OTEL_PYTHON_METER_PROVIDER",
    "OTEL_PYTHON_LOGGER_PROVIDER",
)


def native_telemetry(settings: GatewaySettings) -> TelemetryConfig | None:
    """FastAPI's own OpenTelemetry (a server span per request) as configured: the defaults when tracing is
    on, off when it cannot be. FastAPI decides it per request, asking OpenTelemetry for its tracer, meter and
    logger providers; with none set each answer is an environment lookup, ~7 % of the gateway's CPU per
    read for nothing. Here no provider is ever set unless OTEL_EXPORTER asks for tracing
    (`observability.configure_tracing`, once, at start-up) or OpenTelemetry's own variables name one."""
    if settings.otel_exporter != "none" or any(name in os.environ for name in _OTEL_PROVIDER_ENV):
        return None
    return {"tracing": False, "metrics": False, "logs": False}


def prebuild(app: FastAPI) -> None:
    """Build now what FastAPI builds at its first request: the route table (each included route's fields,
    validators and serializers, ~30,000 objects) and the middleware stack. Made before `freeze_heap`, they
    are out of the cyclic collector's reach; made by the first request, every full collection walked them
    (~20 ms of CPU each, a few times a second under a read load, holding every request in hand)."""
    with suppress(NoMatchFound):
        app.url_path_for("")  # no route has this name: the search walks, and so builds, every route
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()


def openapi() -> dict[str, Any]:
    """The OpenAPI document, generated without NATS or a server (for `proto/openapi.json`)."""
    return create_app(GatewaySettings(nats_url="nats://unused.invalid:4222")).openapi()
