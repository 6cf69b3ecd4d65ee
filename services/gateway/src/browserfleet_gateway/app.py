"""Wiring: settings, NATS, the RPC client, the JWKS verifier, middleware and routers.

`create_app()` connects nothing; the lifespan does. That keeps `openapi()` usable without a running
platform, and lets tests hand in their own NATS connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import Jwks
from browserfleet_core.messaging import RpcClient, connect
from browserfleet_core.security import JwksVerifier
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from nats.aio.client import Client as NatsClient

from .deps import ApiKeyCache, GatewayState
from .errors import install_error_handlers
from .middleware import BodyLimitMiddleware, EdgeMiddleware
from .ratelimit import RateLimiter
from .routes import ROUTERS
from .routes_artifacts import router as artifacts_router
from .routes_identity import router as identity_router
from .routes_profiles import router as profiles_router
from .routes_tasks import ROUTERS as TASK_ROUTERS
from .settings import GatewaySettings

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
        client = rpc or RpcClient(conn, timeout=settings.rpc_timeout_seconds)

        async def fetch_jwks() -> dict[str, Any]:
            jwks: Jwks = await client.call(subjects.Auth.JWKS, {}, Jwks)
            return jwks.model_dump()

        verifier = JwksVerifier(fetch_jwks, min_refresh_seconds=settings.jwks_min_refresh_seconds)
        limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        api_keys = ApiKeyCache(settings.api_key_cache_seconds)
        await api_keys.subscribe(conn)  # revocations from auth reach every replica at once
        app.state.gateway = GatewayState(
            settings=settings,
            nc=conn,
            rpc=client,
            verifier=verifier,
            limiter=limiter,
            login_limiter=RateLimiter(settings.login_rate_per_second, settings.login_burst),
            api_keys=api_keys,
        )
        log.info("gateway ready on NATS %s", settings.nats_url)
        try:
            yield
        finally:
            app.state.gateway = None
            if own_nc and not conn.is_closed:
                await conn.drain()

    app = FastAPI(
        title="browserfleet",
        version=VERSION,
        summary="Browser automation for many teams: tasks, credentials, webhooks and workers.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(identity_router)
    for router in (*TASK_ROUTERS, artifacts_router, profiles_router):
        app.include_router(router)
    # add_middleware wraps: the last one added is the outermost.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
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
    return app


def openapi() -> dict[str, Any]:
    """The OpenAPI document, generated without NATS or a server (for `proto/openapi.json`)."""
    return create_app(GatewaySettings(nats_url="nats://unused.invalid:4222")).openapi()
