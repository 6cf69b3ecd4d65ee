"""Wiring: settings, database, broker, routers, outbox relay, startup and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.workers import PoolInfo, PoolsRequest
from browserfleet_core.batching import BatchConsumer
from browserfleet_core.db import Database, utcnow
from browserfleet_core.health import Health, broker_health, health_router, install
from browserfleet_core.messaging import RpcClient, make_broker
from browserfleet_core.migrations import upgrade
from browserfleet_core.org_events import durable_name
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.runner import settle_heap
from browserfleet_core.streams import ensure_pool_consumers, ensure_streams
from faststream.nats import NatsBroker

from . import admission, creation, metrics, repository, schedules, timeouts
from .handlers import UPDATES_DURABLE, build_lean, build_routers, build_updates_consumer, updates_doc_router
from .models import outbox
from .org_events import build_org_events_router
from .pools import PoolRegistry
from .revocations import DURABLE as REVOKED_DURABLE
from .revocations import build_worker_events_router
from .runtime import Runtime
from .settings import SchedulerSettings
from .workerauth import RpcWorkerAuthenticator, WorkerAuthenticator

log = logging.getLogger(__name__)

PACKAGE = "browserfleet_scheduler"
SCHEMA = "scheduler"
BUSY_RETRY_SECONDS = 0.002


def create_broker(settings: SchedulerSettings, runtime: Runtime | None = None) -> NatsBroker:
    """The service's broker with every handler registered; needs no server (AsyncAPI generation).

    Without a runtime the broker is built to describe the service: it then also declares the TASK_UPDATES
    consumer and the lean request/reply subjects (`build_lean`), which at run time are served beside the
    broker (a BatchConsumer, LeanResponders), not by its subscribers."""
    broker = make_broker(settings.nats_url, name=settings.service_name)
    rt = runtime or Runtime()
    for router in build_routers(rt, rpc_workers=settings.rpc_concurrency):
        broker.include_router(router)
    broker.include_router(build_org_events_router(rt))
    broker.include_router(build_worker_events_router(rt))
    broker.include_router(health_router(endpoints.Scheduler.QUEUE, lambda: rt.health))
    if runtime is None:
        broker.include_router(updates_doc_router())
        broker.include_router(build_lean(rt, rpc_workers=settings.rpc_concurrency).doc_router())
    return broker


def migrate(settings: SchedulerSettings) -> None:
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is required by the scheduler")
    upgrade(PACKAGE, settings.database_url)


class SchedulerApp:
    """One running scheduler: `start()` to serve, `stop()` to leave cleanly."""

    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        authenticator: WorkerAuthenticator | None = None,
        start_relay: bool = True,
        start_loop: bool = True,
    ) -> None:
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is required by the scheduler")
        self.settings = settings
        self.db = Database.of_service(settings, SCHEMA)
        # messages go out right after their commit (no relay round trip on the dispatch path); the task
        # transitions they announce are counted then
        self.relay = OutboxRelay(
            self.db,
            outbox,
            poll_seconds=settings.outbox_poll_seconds,
            publish_on_commit=True,
            on_committed=metrics.count_committed,
        )
        self.runtime = Runtime(
            database=self.db,
            outbox_relay=self.relay,
            authenticator=authenticator,
            redelivery_seconds=settings.update_redelivery_seconds,
            policy=settings.policy(),
            signal_cancel=self._signal_cancel,
        )
        self.broker = create_broker(settings, self.runtime)
        self.lean = build_lean(
            self.runtime, rpc_workers=settings.rpc_concurrency, app_name=settings.service_name
        )
        self._start_relay = start_relay
        self._start_loop = start_loop
        self._loop: asyncio.Task[None] | None = None
        self._queue_was_empty = True  # what the last admission pass found
        self._updates: BatchConsumer | None = None
        self._rpc: RpcClient | None = None
        self.runtime.health = broker_health(
            endpoints.Scheduler.QUEUE,
            self.broker,
            settings,
            database=self.db,
            consumers=[
                (subjects.TASK_UPDATES_STREAM, UPDATES_DURABLE),
                (subjects.EVENTS_STREAM, REVOKED_DURABLE),
                (subjects.EVENTS_STREAM, durable_name(endpoints.Scheduler.QUEUE)),
            ],
            rpc=lambda: self._rpc,
        )

    async def _signal_cancel(self, task_id: str) -> None:
        await self.broker.connection.publish(subjects.task_cancel(task_id), b"")

    async def lifecycle_pass(self, now: datetime | None = None) -> list[str]:
        """Time out what overran, fire due cron ticks, admit what may run. Returns the admitted ids.
        (The running service does these on their own clocks, see `_run_loop`; this does all three now.)"""
        now = now or utcnow()
        await self.reap_pass(now)
        await self.cron_pass(now)
        return await self.admission_pass(now)

    async def reap_pass(self, now: datetime | None = None) -> None:
        overran = await self.db.run(timeouts.reap, self.relay, self.runtime.policy, now or utcnow())
        for task_id in overran:
            await self.runtime.cancel_signal(task_id)

    async def cron_pass(self, now: datetime | None = None) -> None:
        await self.db.run(schedules.fire_due, self.relay, now or utcnow())

    async def admission_pass(self, now: datetime | None = None) -> list[str]:
        return (await self._admission_pass(now)).admitted

    async def _admission_pass(self, now: datetime | None = None) -> admission.PassOutcome:
        now = now or utcnow()
        if self._queue_was_empty:  # then most wakes (a finish) find nothing to admit: ask in one statement
            async with self.db.statement() as conn:
                if not await repository.anything_queued(conn, now):
                    return admission.PassOutcome([], busy=False)
        registered = await self.runtime.registered_pools()  # outside the transaction: a round trip
        # this process's creates wait for the pass rather than find its lock held (creation.AdmitGate)
        async with creation.admit_gate(self.db).admission_pass():
            outcome = await self.db.run(
                admission.admission_pass, self.relay, self.runtime.policy, now, registered
            )
        self._queue_was_empty = not outcome.busy and outcome.seen == 0
        return outcome

    async def _admit_all(self) -> None:
        """Passes until one admits less than a batch. A pass that finds the lock held (a create admitting its
        own task holds it for a statement, another replica's pass for a transaction) is tried again shortly:
        what was queued before that admitter's snapshot may be left to this pass."""
        while True:
            outcome = await self._admission_pass()
            if outcome.busy:
                await asyncio.sleep(BUSY_RETRY_SECONDS)
            elif len(outcome.admitted) < self.runtime.policy.batch:
                return

    async def _run_loop(self) -> None:
        """Admission runs when woken (a create that left its task queued, a finish, a cancel) and every
        `admission_poll_seconds`; the reaper and cron run on their own timers only, so a busy wake costs one
        transaction, not three."""
        wake = self.runtime.wake
        clock = asyncio.get_running_loop().time
        timers: dict[str, tuple[float, Callable[[], Awaitable[None]]]] = {
            "reap": (self.settings.admission_poll_seconds, self.reap_pass),
            "cron": (self.settings.schedule_poll_seconds, self.cron_pass),
        }
        due = dict.fromkeys(timers, 0.0)
        while True:
            until_timer = max(0.0, min(due.values()) - clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(self.settings.admission_poll_seconds, until_timer))
            wake.clear()
            try:
                for name, (every, run_pass) in timers.items():
                    if clock() >= due[name]:
                        due[name] = clock() + every
                        await run_pass()
                await self._admit_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lifecycle pass failed; retrying")
                await asyncio.sleep(self.settings.admission_poll_seconds)

    async def start(self) -> None:
        if self.settings.migrate_on_start:
            await asyncio.to_thread(migrate, self.settings)
        await self.broker.connect()
        js = self.broker.connection.jetstream()
        # the durable update consumer binds to TASK_UPDATES, so the streams must exist first
        await ensure_streams(js)
        for pool in self.settings.pools:
            await ensure_pool_consumers(js, pool)
        rpc = self._rpc = RpcClient(self.broker.connection, timeout=self.settings.rpc_timeout_seconds)
        if self.runtime.authenticator is None:
            authenticator = RpcWorkerAuthenticator(rpc, ttl=self.settings.worker_auth_cache_seconds)
            await authenticator.listen(self.broker.connection)  # a removed worker is refused at once
            self.runtime.authenticator = authenticator
        if self.runtime.registry is None:

            async def fetch() -> list[PoolInfo]:
                return await rpc.call(endpoints.Workers.POOLS, PoolsRequest())

            async def ensure(pool: str) -> None:
                await ensure_pool_consumers(js, pool)

            self.runtime.registry = PoolRegistry(
                fetch, ttl=self.settings.pool_registry_seconds, ensure=ensure
            )
        if self._start_relay:
            self.relay.start(js)
        await self.broker.start()
        await self.lean.start(self.broker.connection)
        self._updates = build_updates_consumer(self.runtime, self.broker.connection)
        await self._updates.start()
        if self._start_loop:
            self._loop = asyncio.create_task(self._run_loop(), name="scheduler-lifecycle")
        self.health.mark_started()
        log.info("scheduler serving on %s", self.settings.nats_url)

    @property
    def health(self) -> Health:
        assert self.runtime.health is not None
        return self.runtime.health

    async def stop(self) -> None:
        self.health.mark_stopping()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        await self.lean.stop()  # answers the requests in hand while the connection is up
        if self._updates is not None:
            await self._updates.stop()  # finishes the batch in hand while the connection is up
            self._updates = None
        await self.broker.stop()
        await self.relay.stop()
        await self.db.dispose()


async def run() -> None:
    import signal

    from browserfleet_core.observability import setup

    settings = SchedulerSettings()  # NATS_URL comes from the environment
    setup(settings)
    # handlers go in before anything starts, so a SIGTERM during startup still ends us cleanly
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = SchedulerApp(settings)
    install(app.health)  # the metrics port answers /health/ready with its checks
    try:
        await app.start()
        settle_heap()
        await stop.wait()
    finally:
        await app.stop()
