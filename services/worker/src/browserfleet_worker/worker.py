"""The worker: pulls tasks (consumer.py) and runs each attempt (attempt.py) while it beats (presence.py), until
stopped; a drain (SIGUSR1 or `workers.drain.<worker_id>`) stops the pulling without stopping the worker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from browserfleet_contracts import subjects
from browserfleet_contracts.workers import DrainReply, ReportedStatus
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .attempt import run_attempt
from .browser import BrowserHost
from .consumer import TaskConsumer
from .presence import Identity, heartbeat_loop, leave, report_status, resolve_worker_id
from .runtime import WorkerRuntime
from .settings import WorkerSettings

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self, settings: WorkerSettings, nc: NatsClient, browser: BrowserHost, identity: Identity
    ) -> None:
        self.rt = WorkerRuntime.create(settings, nc, browser, identity)
        self.consumer = TaskConsumer(
            nc,
            identity.pool,
            functools.partial(run_attempt, self.rt),
            slots=settings.worker_slots,
            lease_extend_seconds=settings.lease_extend_seconds,
        )
        self.halt = asyncio.Event()  # stop pulling: set by stop (SIGTERM) or a drain request
        self._drain_replies: list[str] = []
        self._drain_result: tuple[int, int] | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self._stop: asyncio.Event | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Pull and run tasks until `stop` is set, then let running ones finish (bounded).

        A drain (`workers.drain.<worker_id>` or SIGUSR1) does the same without returning: the worker stops
        pulling, finishes or hands back its running tasks, and stays up (heartbeats go on) until `stop`.
        """
        rt = self.rt
        self._stop = stop
        await self.consumer.open()
        drain_sub = await self._listen_for_drain()
        log.info(
            "worker %s pulling from pool %s with %d slot(s)",
            rt.identity.worker_id or rt.settings.worker_name,
            rt.identity.pool,
            rt.settings.worker_slots,
        )
        heartbeat = asyncio.create_task(
            heartbeat_loop(
                rt.rpc,
                rt.identity,
                rt.settings,
                lambda: len(self.consumer.running),
                stop,
                on_drain=self.request_drain,
                on_removed=self._removed,
            )
        )
        stopper = asyncio.create_task(stop.wait())
        stopper.add_done_callback(lambda _t: self.halt.set())
        try:
            await self.consumer.pull_loop(self.halt)
            if not stop.is_set():  # drained on request: stay up, idle, until told to stop
                await self._drained()
                await stop.wait()
        finally:
            stopper.cancel()
            await self.consumer.drain(rt.settings.shutdown_grace_seconds)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self.consumer.close()
            await leave(rt.rpc, rt.identity)
            if drain_sub is not None:
                with contextlib.suppress(Exception):
                    await drain_sub.unsubscribe()

    def request_drain(self) -> None:
        """Stop taking work; running tasks get the grace period (SIGUSR1 and the drain subject call this)."""
        if not self.halt.is_set():
            log.info("drain requested: no new tasks; %d running", len(self.consumer.running))
            stopping = self._stop is not None and self._stop.is_set()
            if not stopping:  # admins see it draining (a drain they asked for, or SIGUSR1)
                self._report("draining", "no new tasks; finishing the running ones")
        self.halt.set()

    def _removed(self) -> None:
        """An admin removed this worker: its key is dead, so it stops (running tasks were given back)."""
        self.halt.set()
        if self._stop is not None:
            self._stop.set()

    def _report(self, status: ReportedStatus, detail: str) -> None:
        task = asyncio.get_running_loop().create_task(
            report_status(self.rt.rpc, self.rt.identity, status, detail)
        )
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _listen_for_drain(self) -> Subscription | None:
        worker_id = await resolve_worker_id(self.rt.rpc, self.rt.identity)
        if worker_id is None:
            return None

        async def on_drain(msg: Msg) -> None:
            self.request_drain()
            if msg.reply:
                self._drain_replies.append(msg.reply)
            if self._drain_result is not None:  # already drained: answer at once
                await self._answer_drains()

        return await self.rt.nc.subscribe(subjects.worker_drain(worker_id), cb=on_drain)

    async def _drained(self) -> None:
        self._drain_result = await self.consumer.drain(self.rt.settings.shutdown_grace_seconds)
        log.info(
            "drained: %d task(s) finished, %d handed back; idle until stopped",
            self._drain_result[0],
            self._drain_result[1],
        )
        await self._answer_drains()

    async def _answer_drains(self) -> None:
        finished, handed_back = self._drain_result or (0, 0)
        reply = DrainReply(
            worker_id=self.rt.identity.worker_id or self.rt.settings.worker_name,
            finished=finished,
            handed_back=handed_back,
        )
        while self._drain_replies:
            with contextlib.suppress(Exception):
                await self.rt.nc.publish(self._drain_replies.pop(), reply.model_dump_json().encode())
