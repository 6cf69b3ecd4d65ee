"""Health that tells the truth: one check per dependency (the database, NATS, the consumers' lag, the services
this one calls), each run with a time budget when asked, and the service's status the worst of them.

    health = Health("scheduler", timeout=2.0)
    health.add("database", database_probe(db))                     # critical: unhealthy without it
    health.add("consumer:TASK_UPDATES/scheduler", lag_probe(...), critical=False)   # degraded when behind
    health.mark_started()                                          # until then: unhealthy, "starting"
    report = await health.evaluate()

A probe returns a short detail when the dependency is fine, raises `Degraded` when it works but not as it
should, and raises anything else (or overruns the budget) when it fails: a failing critical check makes the
service `unhealthy` (it cannot serve: Kubernetes takes it out of rotation, never restarts it for that), a
failing non-critical one `degraded`. Checks marked `downstream` (another service this one calls) run for the
HTTP report only: the bus answer (`svc.<service>.health`) has the service's own checks, so services that call
each other never ask round in a circle.

The report is served on the metrics port (`browserfleet_core.observability`): /health/live (the process
answers: liveness), /health and /health/ready (the report; 503 when unhealthy), and every scrape of /metrics
runs the checks first, so `browserfleet_health_status{service}` and `browserfleet_health_check_status{service,
check}` (0 healthy, 1 degraded, 2 unhealthy) are as fresh as the scrape: the alert rules read them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Empty
from browserfleet_contracts.endpoints import Endpoint
from browserfleet_contracts.health import STATUS_VALUE, HealthCheck, HealthReport, HealthStatus, worst
from prometheus_client import Gauge

if TYPE_CHECKING:
    from faststream.nats import NatsBroker
    from nats.aio.client import Client as NatsClient

    from .breaker import Breakers
    from .db import Database
    from .messaging import RpcClient, RpcRouter
    from .settings import ServiceSettings

log = logging.getLogger(__name__)

STATUS = Gauge(
    "browserfleet_health_status",
    "The service's health when last checked: 0 healthy, 1 degraded, 2 unhealthy",
    ["service"],
)
CHECK_STATUS = Gauge(
    "browserfleet_health_check_status",
    "One dependency of the service when last checked: 0 healthy, 1 degraded, 2 unhealthy",
    ["service", "check"],
)

# the module is imported as the service starts: uptime counts from here
_PROCESS_STARTED = time.monotonic()

Probe = Callable[[], Awaitable[str]]


class Degraded(Exception):
    """A probe's finding: the dependency works, but not as it should (a consumer far behind). The check is
    degraded whether it is critical or not."""


@dataclass(frozen=True)
class _Check:
    probe: Probe
    critical: bool
    downstream: bool


@functools.cache  # importlib.metadata searches sys.path on every call (~0.2 ms)
def package_version(service: str) -> str:
    try:
        return metadata.version(f"browserfleet-{service}")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "0+unknown"


class Health:
    """A service's checks. `timeout`: each probe's budget (a probe still running then has failed)."""

    def __init__(self, service: str, *, version: str | None = None, timeout: float = 2.0) -> None:
        self.service = service
        self.version = version or package_version(service)
        self.timeout = timeout
        self.checks: dict[str, _Check] = {}
        self.phase = "starting"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last: HealthReport | None = None

    def add(self, name: str, probe: Probe, *, critical: bool = True, downstream: bool = False) -> None:
        self.checks[name] = _Check(probe, critical, downstream)

    def mark_started(self) -> None:
        """The service has started: its checks decide from now on. Also binds the running loop, on which the
        metrics port's thread runs the checks."""
        self.phase = "started"
        self.loop = asyncio.get_running_loop()

    def mark_stopping(self) -> None:
        """Shutting down: unhealthy (out of rotation) while the work in hand finishes."""
        self.phase = "stopping"

    def uptime(self) -> float:
        return round(time.monotonic() - _PROCESS_STARTED, 3)

    def liveness(self) -> dict[str, Any]:
        """What /health/live answers: the process is up (no dependency is asked)."""
        return {
            "service": self.service,
            "status": "alive",
            "timestamp": datetime.now(UTC).isoformat(),
            "uptime": self.uptime(),
            "version": self.version,
        }

    async def evaluate(self, *, own_only: bool = False) -> HealthReport:
        """Every check at once, each within the budget. `own_only`: without the downstream checks."""
        chosen = {n: c for n, c in self.checks.items() if not (own_only and c.downstream)}
        results = await asyncio.gather(*(self._run(c) for c in chosen.values()))
        checks = dict(zip(chosen, results, strict=True))
        if self.phase != "started":
            checks["lifecycle"] = HealthCheck(status="unhealthy", detail=self.phase, critical=True)
        report = self._report(checks)
        self._export(report)
        if not own_only:
            self.last = report
        return report

    def _report(self, checks: dict[str, HealthCheck]) -> HealthReport:
        return HealthReport(
            service=self.service,
            status=worst([c.status for c in checks.values()]),
            timestamp=datetime.now(UTC),
            uptime=self.uptime(),
            version=self.version,
            checks=checks,
        )

    async def _run(self, check: _Check) -> HealthCheck:
        failing: HealthStatus = "unhealthy" if check.critical else "degraded"
        try:
            detail = await asyncio.wait_for(check.probe(), timeout=self.timeout)
        except Degraded as exc:
            return HealthCheck(status="degraded", detail=str(exc)[:300], critical=check.critical)
        except TimeoutError:
            return HealthCheck(
                status=failing, detail=f"no answer within {self.timeout:g} s", critical=check.critical
            )
        except Exception as exc:  # a check reports a failure, it never raises it
            detail = f"{type(exc).__name__}: {exc}"[:300]
            return HealthCheck(status=failing, detail=detail, critical=check.critical)
        return HealthCheck(status="healthy", detail=detail[:300], critical=check.critical)

    def _export(self, report: HealthReport) -> None:
        STATUS.labels(self.service).set(STATUS_VALUE[report.status])
        for name, check in report.checks.items():
            CHECK_STATUS.labels(self.service, name).set(STATUS_VALUE[check.status])

    def evaluate_from_thread(self) -> HealthReport:
        """The report for a caller on another thread (the metrics port's): the checks run on the service's
        loop. Before `mark_started` (or with the loop stuck past the budget) the report says so."""
        loop = self.loop
        if loop is None or loop.is_closed():
            report = self._report(
                {"lifecycle": HealthCheck(status="unhealthy", detail=self.phase, critical=True)}
            )
            self._export(report)
            return report
        future = asyncio.run_coroutine_threadsafe(self.evaluate(), loop)
        try:
            return future.result(timeout=self.timeout + 2)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            future.cancel()
            stuck = HealthCheck(
                status="unhealthy", detail="the event loop did not run the checks in time", critical=True
            )
            report = self._report({"event_loop": stuck})
            self._export(report)
            return report


def http_status(report: HealthReport) -> int:
    """503 only when the service cannot serve: a degraded one still takes its share of the work."""
    return 503 if report.status == "unhealthy" else 200


def report_json(report: HealthReport) -> bytes:
    return json.dumps(report.model_dump(mode="json")).encode()


# --- the process's health, served on the metrics port ---------------------------------------------------------
_installed: list[Health] = []


def install(health: Health) -> Health:
    """Make `health` the one the metrics port serves (one service per process)."""
    _installed[:] = [health]
    return health


def installed() -> Health | None:
    return _installed[0] if _installed else None


def broker_connection(broker: NatsBroker) -> Callable[[], NatsClient | None]:
    """The broker's NATS connection once it has connected (None before)."""
    return lambda: broker._connection


# --- probes -----------------------------------------------------------------------------------------------
def nats_probe(connection: Callable[[], NatsClient | None]) -> Probe:
    """Connected to a NATS server (a client reconnecting fails the check)."""

    async def probe() -> str:
        nc = connection()
        if nc is None:
            raise RuntimeError("not connected yet")
        if nc.is_connected:
            url = nc.connected_url
            return f"connected to {url.netloc.rpartition('@')[2] if url else '?'}"
        raise RuntimeError("reconnecting" if nc.is_reconnecting else "disconnected")

    return probe


def database_probe(db: Database) -> Probe:
    """SELECT 1 through the service's own pool."""

    async def probe() -> str:
        started = time.perf_counter()
        await db.ping()
        return f"SELECT 1 in {(time.perf_counter() - started) * 1000:.0f} ms"

    return probe


def consumer_lag_probe(
    connection: Callable[[], NatsClient | None], stream: str, durable: str, *, max_pending: int
) -> Probe:
    """The durable consumer's backlog: degraded above `max_pending` messages not yet delivered."""

    async def probe() -> str:
        nc = connection()
        if nc is None:
            raise RuntimeError("not connected yet")
        info = await nc.jetstream().consumer_info(stream, durable)
        pending, unacked = int(info.num_pending or 0), int(info.num_ack_pending or 0)
        detail = f"{pending} pending, {unacked} unacknowledged"
        if pending > max_pending:
            raise Degraded(f"{detail} (more than {max_pending} behind)")
        return detail

    return probe


def service_probe(rpc: Callable[[], RpcClient | None], endpoint: Endpoint[Empty, HealthReport]) -> Probe:
    """A service this one calls answers its health: unanswered or unhealthy fails the check."""

    async def probe() -> str:
        client = rpc()
        if client is None:
            raise RuntimeError("not connected yet")
        report = await client.call(endpoint, Empty())
        if report.status == "unhealthy":
            failing = [f"{n}: {c.detail}" for n, c in report.checks.items() if c.status == "unhealthy"]
            raise RuntimeError(f"unhealthy ({'; '.join(failing)})")
        return report.status

    return probe


def breakers_probe(registry: Callable[[], Breakers]) -> Probe:
    """Degraded while a circuit breaker of this process is open (its calls fail fast)."""

    async def probe() -> str:
        snapshot = registry().snapshot()
        opened = sorted(name for name, snap in snapshot.items() if snap.state != "closed")
        if opened:
            raise Degraded(f"open: {', '.join(opened)}")
        return f"{len(snapshot)} closed"

    return probe


def health_endpoint(queue: str) -> Endpoint[Empty, HealthReport]:
    """The `svc.<service>.health` endpoint served by `queue`."""
    for service in endpoints.SERVICES:
        if queue == service.QUEUE:
            found: Endpoint[Empty, HealthReport] = service.HEALTH
            return found
    raise KeyError(queue)


def downstream_queues(identity: str) -> list[str]:
    """The services `identity` calls (its endpoints' callers, from the contracts), itself left out (and the
    health endpoints, which every service may ask)."""
    health = {id(service.HEALTH) for service in endpoints.SERVICES}
    return sorted(
        {
            ep.queue
            for ep in endpoints.all_endpoints()
            if identity in ep.callers and ep.queue != identity and id(ep) not in health
        }
    )


def service_health(
    identity: str,
    *,
    nats: Callable[[], NatsClient | None],
    database: Database | None = None,
    consumers: Iterable[tuple[str, str]] = (),
    rpc: Callable[[], RpcClient | None] | None = None,
    breakers: Callable[[], Breakers] | None = None,
    timeout: float = 2.0,
    max_consumer_lag: int = 1000,
) -> Health:
    """A NATS service's standard checks: `nats` and `database` (critical), `consumer:<stream>/<durable>` for
    each durable consumer it reads (degraded when behind), `service:<name>` for each service it calls (from
    the contracts; degraded while one does not answer or is unhealthy), `breakers` (degraded while one is
    open)."""
    health = Health(identity, timeout=timeout)
    health.add("nats", nats_probe(nats))
    if database is not None:
        health.add("database", database_probe(database))
    for stream, durable in consumers:
        probe = consumer_lag_probe(nats, stream, durable, max_pending=max_consumer_lag)
        health.add(f"consumer:{stream}/{durable}", probe, critical=False)
    if rpc is not None:
        for queue in downstream_queues(identity):
            health.add(
                f"service:{queue}",
                service_probe(rpc, health_endpoint(queue)),
                critical=False,
                downstream=True,
            )
    if breakers is not None:
        health.add("breakers", breakers_probe(breakers), critical=False)
    return health


def broker_health(
    identity: str,
    broker: NatsBroker,
    settings: ServiceSettings,
    *,
    database: Database | None = None,
    consumers: Iterable[tuple[str, str]] = (),
    rpc: Callable[[], RpcClient | None] | None = None,
) -> Health:
    """`service_health` of a service on a FastStream broker, each probe's budget and the consumers' allowed lag
    as its settings say (HEALTH_TIMEOUT_SECONDS, HEALTH_MAX_CONSUMER_LAG)."""
    return service_health(
        identity,
        nats=broker_connection(broker),
        database=database,
        consumers=consumers,
        rpc=rpc,
        timeout=settings.health_timeout_seconds,
        max_consumer_lag=settings.health_max_consumer_lag,
    )


def health_router(queue: str, health: Callable[[], Health | None]) -> RpcRouter:
    """Serves `svc.<service>.health` with the service's own checks (`health()` None: still starting)."""
    from .messaging import rpc_router

    router = rpc_router()

    @router.handle(health_endpoint(queue))
    async def answer(body: Empty) -> HealthReport:
        found = health()
        if found is None:
            starting = HealthCheck(status="unhealthy", detail="starting", critical=True)
            return HealthReport(
                service=queue,
                status="unhealthy",
                timestamp=datetime.now(UTC),
                uptime=round(time.monotonic() - _PROCESS_STARTED, 3),
                version=package_version(queue),
                checks={"lifecycle": starting},
            )
        return await found.evaluate(own_only=True)

    return router
