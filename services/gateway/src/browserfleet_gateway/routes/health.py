"""Operations: liveness, the platform's health (the gateway's own checks and every service's, asked over the
bus), its database health and Prometheus metrics; no credentials."""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import Jwks
from browserfleet_contracts.common import DbHealth, Empty
from browserfleet_contracts.endpoints import Endpoint
from browserfleet_contracts.health import HealthReport
from browserfleet_core.health import (
    Health,
    breakers_probe,
    health_endpoint,
    http_status,
    nats_probe,
    package_version,
)
from browserfleet_core.messaging import RpcClient
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, Field

from ..deps import public
from ..runtime import GatewayState

router = APIRouter(tags=["ops"], dependencies=[Depends(public("operations: health and metrics"))])


_STARTED = time.monotonic()  # the module loads as the process starts: uptime counts from here
# read once: importlib.metadata searches every sys.path entry at each call (~0.2 ms, most of a liveness probe)
_VERSION = package_version("gateway")
# every service the gateway calls (all of them): each answers its own health over the bus
SERVICES = tuple(service.QUEUE for service in endpoints.SERVICES)


class Liveness(BaseModel):
    """The process answers (no dependency is asked)."""

    status: Literal["alive"] = "alive"
    timestamp: datetime = Field(description="the gateway's clock, UTC")
    uptime: float = Field(description="seconds since this gateway process started")
    version: str


class DbCheck(BaseModel):
    status: Literal["healthy", "unhealthy"]
    detail: str


class DbHealthReport(BaseModel):
    """`status` (and, when unhealthy, `error`) as the seed answers; `checks` per service."""

    status: Literal["healthy", "unhealthy"]
    error: str | None = None
    checks: dict[str, DbCheck]


class Check(BaseModel):
    ok: bool
    detail: str


class PlatformHealth(HealthReport):
    """The gateway's report (its own checks: `nats` and `auth` critical, `service:<name>` per service and
    `breakers` degrading) with each service's own report under `services`."""

    services: dict[str, HealthReport] = Field(
        default_factory=dict, description="each service's own report, as it answered (absent: no answer)"
    )


# the services' own reports, collected by one evaluation's probes (each request has its own)
_ANSWERS: ContextVar[dict[str, HealthReport]] = ContextVar("health_answers")


def gateway_health(request: Request) -> Health:
    """This replica's checks, made on first use from what the lifespan connected."""
    state: GatewayState | None = getattr(request.app.state, "gateway", None)
    cached: tuple[GatewayState, Health] | None = getattr(request.app.state, "health_of", None)
    if cached is not None and cached[0] is state:
        return cached[1]
    settings = state.settings if state is not None else None
    health = Health(
        "gateway",
        version=_VERSION,
        timeout=settings.health_timeout_seconds if settings is not None else 2.0,
    )
    if state is None:  # before the lifespan (or after it): unhealthy, "starting"
        return health
    health.add("nats", nats_probe(lambda: state.nc))
    health.add("auth", _auth_probe(state, health.timeout))
    for queue in SERVICES:
        health.add(f"service:{queue}", _service_probe(state, queue), critical=False)
    health.add("breakers", breakers_probe(lambda: state.breakers), critical=False)
    health.mark_started()
    request.app.state.health_of = (state, health)
    return health


def _probe_rpc(state: GatewayState) -> RpcClient:
    # readiness probes report on a service, they never trip its breaker
    rpc = state.probe_rpc or state.rpc
    if rpc is None:
        raise RuntimeError("not connected yet")
    return rpc


def _auth_probe(state: GatewayState, budget: float) -> Any:
    async def probe() -> str:
        jwks: Jwks = await _probe_rpc(state).call(endpoints.Auth.JWKS, Empty(), timeout=budget)
        if not jwks.keys:
            raise RuntimeError("JWKS has no keys")
        return f"JWKS has {len(jwks.keys)} key(s)"

    return probe


def _service_probe(state: GatewayState, queue: str) -> Any:
    async def probe() -> str:
        report = await _probe_rpc(state).call(health_endpoint(queue), Empty())
        answers = _ANSWERS.get(None)
        if answers is not None:
            answers[queue] = report
        if report.status == "unhealthy":
            failing = [f"{n}: {c.detail}" for n, c in report.checks.items() if c.status == "unhealthy"]
            raise RuntimeError(f"unhealthy ({'; '.join(failing)})")
        return report.status

    return probe


async def platform_health(request: Request) -> PlatformHealth:
    answers: dict[str, HealthReport] = {}
    token = _ANSWERS.set(answers)
    try:
        report = await gateway_health(request).evaluate()
    finally:
        _ANSWERS.reset(token)
    return PlatformHealth(**report.model_dump(), services=dict(sorted(answers.items())))


@router.get(
    "/health/live",
    response_model=Liveness,
    summary="Liveness: the process answers (timestamp, uptime, version); no dependency is asked",
)
async def live() -> Liveness:
    return Liveness(
        timestamp=datetime.now(UTC),
        uptime=round(time.monotonic() - _STARTED, 3),
        version=_VERSION,
    )


_HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": PlatformHealth, "description": "unhealthy: NATS or auth cannot be reached"}
}


@router.get(
    "/health",
    response_model=PlatformHealth,
    responses=_HEALTH_RESPONSES,
    summary="The platform's health: healthy, degraded or unhealthy, one check per dependency and each "
    "service's own report (status, timestamp, uptime, version)",
)
async def health(request: Request) -> JSONResponse:
    report = await platform_health(request)
    return JSONResponse(report.model_dump(mode="json"), status_code=http_status(report))


@router.get(
    "/health/ready",
    response_model=PlatformHealth,
    responses=_HEALTH_RESPONSES,
    summary="Readiness: 200 while this gateway can serve (healthy or degraded), 503 when unhealthy",
)
async def ready(request: Request) -> JSONResponse:
    report = await platform_health(request)
    return JSONResponse(report.model_dump(mode="json"), status_code=http_status(report))


# The gateway keeps no database of its own: the platform's database health is what the services that keep
# tasks (scheduler) and secrets (vault) answer when asked to run `SELECT 1` through their own pools. Asked
# over the bus, so a 503 here also says the gateway cannot reach them.
_DB_SERVICES = {"scheduler": endpoints.Scheduler.DB_HEALTH, "vault": endpoints.Vault.DB_HEALTH}


@router.get(
    "/health/db",
    response_model=DbHealthReport,
    responses={503: {"model": DbHealthReport, "description": "a service cannot reach its database"}},
    summary="Database health: the scheduler and the vault each run SELECT 1 through their own pool",
)
async def health_db(request: Request) -> JSONResponse:
    state: GatewayState | None = getattr(request.app.state, "gateway", None)
    if state is None or state.rpc is None:
        checks = {n: DbCheck(status="unhealthy", detail="gateway starting") for n in _DB_SERVICES}
    else:
        budget = state.settings.health_timeout_seconds
        results = await asyncio.gather(
            *(_check(_ask_db(state, ep, budget), budget) for ep in _DB_SERVICES.values())
        )
        checks = {
            name: DbCheck(status="healthy" if c.ok else "unhealthy", detail=c.detail)
            for name, c in zip(_DB_SERVICES, results, strict=True)
        }
    failing = [f"{name}: {c.detail}" for name, c in checks.items() if c.status != "healthy"]
    body = DbHealthReport(
        status="unhealthy" if failing else "healthy", error="; ".join(failing) or None, checks=checks
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if failing else 200)


async def _ask_db(state: GatewayState, endpoint: Endpoint[Empty, DbHealth], budget: float) -> Check:
    assert state.rpc is not None
    answer: DbHealth = await state.rpc.call(endpoint, Empty(), timeout=budget)
    return Check(ok=answer.ok, detail=answer.detail)


async def _check(probe: Any, budget: float) -> Check:
    try:
        result: Check = await asyncio.wait_for(probe, timeout=budget)
        return result
    except TimeoutError:
        return Check(ok=False, detail=f"no answer within {budget:g}s")
    except Exception as exc:  # a readiness probe reports failures, it never raises them
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}"[:200])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    await platform_health(request)  # the health gauges are as fresh as the scrape
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
