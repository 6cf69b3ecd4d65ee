"""A benchmark worker: the real worker protocol (CONTRIBUTING "The task protocol") without a browser.

It pulls from the pool's durable consumers (every priority at once), claims each attempt with
`svc.scheduler.claim` (the claim is the start: no `started` update), publishes its `result` on TASK_UPDATES
with the worker's message id, and acks the TASKS message only after the result is stored, exactly as
`browserfleet_worker` does. What it
skips is the browser, so what the control-plane benchmark measures is the platform's own cost.

Run by the benchmark as `python -m tests.bench.bench_worker` with NATS_URL, WORKER_KEY, WORKER_ID,
BENCH_SLOTS and BENCH_STARTS_FILE; a request on `bench.worker.report` writes when each task started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.tasks import ClaimReply, ClaimRequest, TaskDispatch, TaskUpdateMessage
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import BusCredentials, RpcClient, connect
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

# as the real worker (browserfleet_core.taskpull.RING_REPROBE_SECONDS): a ring can come before the consumer
# offers the message it announces, so an empty pull after a ring is retried after these pauses
RING_REPROBE_SECONDS = (0.002, 0.005, 0.01, 0.025, 0.05)


class BenchWorker:
    # what the chaos suite's worker changes: how long a task takes and what it returns, whether its claim
    # names the TASKS message's delivery (the real worker's does), and what it keeps count of (`note`)
    task_seconds = 0.0
    result: ClassVar[dict[str, Any]] = {"noop": True}
    claim_delivery = False

    def __init__(self, js: JetStreamContext, rpc: RpcClient, key: str, worker_id: str, slots: int) -> None:
        self.js = js
        self.rpc = rpc
        self.key = key
        self.worker_id = worker_id
        self.max_batch = slots
        self.started: dict[str, float] = {}
        self.running: set[asyncio.Task[None]] = set()

    async def pull(self, priority: str, stop: asyncio.Event) -> None:
        """One loop per priority consumer, each with its own `slots`: an idle priority must not hold
        slots the busy one needs. Pulls are no-wait batches (whatever is there now, answered at once),
        and an empty pull sleeps until the priority's doorbell rings (a dispatch was published) or 1 s
        passes (a redelivery rings none), as the real worker does. nats-py's fetch(n, timeout) would
        hold the first message until n arrived or the timeout ran out."""
        durable = subjects.task_run_consumer(subjects.DEFAULT_POOL, priority)
        doorbell = asyncio.Event()

        async def ring(_msg: Msg) -> None:
            doorbell.set()

        bell = await self.js._nc.subscribe(subjects.task_run(subjects.DEFAULT_POOL, priority), cb=ring)
        inbox = await self.js._nc.subscribe(self.js._nc.new_inbox())
        slots = asyncio.Semaphore(self.max_batch)
        reprobe: Iterator[float] = iter(())
        try:
            while not stop.is_set():
                await slots.acquire()
                free = 1
                while free < self.max_batch and not slots.locked():
                    await slots.acquire()
                    free += 1
                doorbell.clear()  # before pulling: a dispatch published mid-pull wakes the next wait
                try:
                    msgs = await self.pull_no_wait(inbox, durable, free)
                except TimeoutError:
                    msgs = []
                for _ in range(free - len(msgs)):
                    slots.release()
                for msg in msgs:
                    task = asyncio.create_task(self.run(msg))
                    self.running.add(task)
                    task.add_done_callback(functools.partial(self._done, slots=slots))
                if msgs:
                    reprobe = iter(())
                elif (pause := next(reprobe, None)) is not None:
                    await asyncio.sleep(pause)  # a ring may come before the consumer offers its message
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(doorbell.wait(), timeout=1.0)
                    reprobe = iter(RING_REPROBE_SECONDS if doorbell.is_set() else ())
        finally:
            await bell.unsubscribe()
            await inbox.unsubscribe()

    async def pull_no_wait(self, inbox: Subscription, durable: str, batch: int) -> list[Msg]:
        """Up to `batch` messages that `durable` holds now; the server ends the answer with a status
        (404 no messages / 408) when it has fewer, so this never waits for messages to arrive."""
        request = json.dumps({"batch": batch, "no_wait": True}).encode()
        await self.js._nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{subjects.TASKS_STREAM}.{durable}", request, reply=inbox.subject
        )
        msgs: list[Msg] = []
        while len(msgs) < batch:
            reply = await inbox.next_msg(timeout=5.0)
            if (reply.headers or {}).get("Status") is not None:
                break
            msgs.append(reply)
        return msgs

    def _done(self, task: asyncio.Task[None], slots: asyncio.Semaphore) -> None:
        self.running.discard(task)
        slots.release()

    def note(self, what: str) -> None:
        """A step of the protocol was taken: redelivered, claim_errors, claims_refused, claims_granted, results."""

    async def run(self, msg: Msg) -> None:
        dispatch = TaskDispatch.model_validate_json(msg.data)
        delivered = msg.metadata.num_delivered
        if delivered > 1:
            self.note("redelivered")
        try:
            claim: ClaimReply = await self.rpc.call(
                endpoints.Scheduler.CLAIM,
                ClaimRequest(
                    task_id=dispatch.task_id,
                    attempt=dispatch.attempt,
                    worker_key=self.key,
                    delivery=delivered if self.claim_delivery else None,
                ),
            )
        except ServiceError:
            self.note("claim_errors")
            await msg.nak(delay=1)
            return
        if not claim.granted:
            self.note("claims_refused")  # a duplicate dispatch the scheduler turned away
            await msg.term()
            return
        self.note("claims_granted")
        self.started.setdefault(dispatch.task_id, time.time())
        worker_id = claim.worker_id or self.worker_id
        ref = f"{dispatch.task_id}:{dispatch.attempt}"
        # as the worker: no `started` update (the claim is the start), the ack not waited for once the
        # result is stored
        if self.task_seconds:
            await asyncio.sleep(self.task_seconds)
        await self.publish(
            TaskUpdateMessage(
                task_id=dispatch.task_id,
                attempt=dispatch.attempt,
                worker_id=worker_id,
                kind="result",
                status="completed",
                result=self.result,
                execution_time_seconds=self.task_seconds,
            ),
            f"{ref}:result",
        )
        self.note("results")
        await msg.ack()

    async def serve(self, stop: asyncio.Event, ready: Callable[[], Awaitable[object]] | None = None) -> None:
        """Pull every priority (`ready` once the pulls are under way) until `stop` is set, then give the tasks
        still running 10 s to end."""
        pullers = [asyncio.create_task(self.pull(p, stop)) for p in subjects.PRIORITIES]
        if ready is not None:
            await ready()
        await stop.wait()
        for t in pullers:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pullers, return_exceptions=True)
        if self.running:
            await asyncio.wait(set(self.running), timeout=10)

    async def publish(self, update: TaskUpdateMessage, msg_id: str) -> None:
        await self.js.publish(
            subjects.task_update(update.worker_id, update.task_id),
            update.model_dump_json().encode(),
            stream=subjects.TASK_UPDATES_STREAM,
            headers={"Nats-Msg-Id": msg_id},
        )


def stop_on_signals() -> asyncio.Event:
    """An event SIGINT or SIGTERM sets: the worker's way out."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def connect_as_worker(name: str) -> NatsClient:
    # on the bus as the worker its key makes it (the auth callout's identity), as a real worker is
    return await connect(
        os.environ["NATS_URL"], name=name, credentials=BusCredentials.worker(os.environ["WORKER_KEY"])
    )


async def main() -> None:
    stop = stop_on_signals()
    nc = await connect_as_worker("bench-worker")
    control = await connect(
        os.environ["BENCH_CONTROL_URL"], name="bench-control", credentials=BusCredentials()
    )
    worker = BenchWorker(
        nc.jetstream(),
        RpcClient(nc, timeout=10),
        os.environ["WORKER_KEY"],
        os.environ.get("WORKER_ID", "bench"),
        int(os.environ.get("BENCH_SLOTS", "64")),
    )
    starts_file = Path(os.environ["BENCH_STARTS_FILE"])

    async def report(msg: Msg) -> None:
        await asyncio.to_thread(starts_file.write_text, json.dumps(worker.started))
        await msg.respond(b"ok")

    async def ready() -> None:
        await asyncio.sleep(0.2)  # let every puller bind its consumer before saying we are ready
        await control.subscribe("bench.worker.report", cb=report)

    await worker.serve(stop, ready)
    await control.drain()
    await nc.drain()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
