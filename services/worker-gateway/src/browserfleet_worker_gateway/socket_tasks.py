"""The attempts a remote worker holds, as its socket's session keeps them: pulled from the worker's pool for
as many as it has free slots (urgent first, `browserfleet_core.taskpull`), claimed as the worker, assigned;
resumed after a reconnection when the scheduler says the worker still holds them; their frames kept in order
(STARTED first, RESULT last); cancellations passed on; finished once the result is stored.

Everything here runs on the worker's own bus connection, so the server's allow-lists for that worker apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.tasks import ClaimInfoRequest, ClaimReply, ClaimRequest, TaskDispatch
from browserfleet_contracts.worker_socket import (
    Cancel,
    Drain,
    Drained,
    HeldTask,
    Log,
    LostTask,
    Progress,
    Result,
    Security,
    Started,
    TaskAssigned,
)
from browserfleet_contracts.workers import DrainReply, WorkerIdentity
from browserfleet_core.errors import NotFound, ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_core.taskpull import PoolPuller
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from .socket_leases import BadLease, Held, Leases, delivery_of
from .socket_relay import FrameRefused

log = logging.getLogger(__name__)

Send = Callable[[BaseModel], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class WorkerTasks:
    def __init__(
        self,
        worker: WorkerIdentity,
        key: str,
        nc: NatsClient,
        service_rpc: RpcClient,
        *,
        send: Send,
        spawn: Spawn,
        rpc_timeout: float,
    ) -> None:
        self.worker, self.key, self.nc = worker, key, nc
        self.service_rpc = service_rpc  # worker-gateway's own identity: it may ask the scheduler's claim info
        self.rpc = RpcClient(nc, timeout=rpc_timeout)  # the worker's: it claims
        self.leases = Leases(nc)
        self.send, self.spawn = send, spawn
        self.held: dict[str, Held] = {}
        self.finished: deque[tuple[str, int]] = deque(maxlen=256)
        self.slots = 0
        self.claiming = 0
        self.capacity = asyncio.Event()  # set while the worker has a free slot: the puller may pull
        self.no_capacity = asyncio.Event()  # the puller's halt
        self.closed = False
        self._subs: list[Subscription] = []
        self._drain_replies: list[str] = []
        self.changed()

    def set_slots(self, slots: int) -> None:
        self.slots = slots
        self.changed()

    def changed(self) -> None:
        if not self.closed and len(self.held) + self.claiming < self.slots:
            self.capacity.set()
            self.no_capacity.clear()
        else:
            self.capacity.clear()
            self.no_capacity.set()

    # --- a reconnection ---------------------------------------------------------------------------------
    async def resume(self, held: list[HeldTask]) -> tuple[list[str], list[LostTask]]:
        """The attempts the worker still runs, taken back when the scheduler says it holds them."""
        resumed: list[str] = []
        lost: list[LostTask] = []
        for h in held:
            reason = None
            try:
                delivery_of(h.lease, self.worker.pool)
                info = await self.service_rpc.call(
                    endpoints.Scheduler.CLAIM_INFO, ClaimInfoRequest(task_id=h.task_id)
                )
                if info.status != "running" or info.attempt != h.attempt:
                    reason = f"the task is {info.status} at attempt {info.attempt} now"
                elif info.worker_id != self.worker.worker_id:
                    reason = "another worker holds it now"
            except BadLease as exc:
                reason = str(exc)
            except NotFound:
                reason = "the task no longer exists"
            except ServiceError as exc:  # cannot ask now: keep it; the scheduler ignores a result not current
                log.warning("could not check task %s of worker %s: %s", h.task_id, self.worker.worker_id, exc)
            if reason is not None:
                lost.append(LostTask(task_id=h.task_id, attempt=h.attempt, reason=reason))
                continue
            task = Held(h.task_id, h.attempt, ack=h.lease, started=h.started, assigned=True)
            self.held[h.task_id] = task
            await self._listen_for_cancel(task)
            with contextlib.suppress(Exception):
                await self.leases.progress(task.ack)
            resumed.append(h.task_id)
        self.changed()
        return resumed, lost

    # --- frames about an attempt ------------------------------------------------------------------------
    def get(self, task_id: str, attempt: int, frame_id: int | None = None) -> Held:
        held = self.held.get(task_id)
        if held is None or held.attempt != attempt:
            raise FrameRefused(
                "task_not_held",
                f"this worker does not hold attempt {attempt} of task {task_id}",
                id=frame_id,
                task_id=task_id,
            )
        return held

    def in_order(self, frame: Started | Log | Security | Result) -> Held:
        """STARTED first, RESULT last: a frame out of that order changes nothing."""
        held = self.get(frame.task_id, frame.attempt, frame.id)
        if held.finishing:
            raise FrameRefused(
                "out_of_order", f"{frame.type} after the task's RESULT", id=frame.id, task_id=frame.task_id
            )
        if isinstance(frame, Started):
            held.started = True
        elif not held.started:
            raise FrameRefused(
                "out_of_order", f"{frame.type} before STARTED", id=frame.id, task_id=frame.task_id
            )
        if isinstance(frame, Result):
            held.finishing = True
        return held

    async def progress(self, frame: Progress) -> None:
        if (frame.task_id, frame.attempt) in self.finished:
            return  # a beat that crossed the result on the way
        held = self.get(frame.task_id, frame.attempt)
        try:
            await self.leases.progress(held.ack)
        except Exception as exc:  # the bus is reconnecting: the next beat extends it
            log.debug("extending the lease of %s failed: %s", frame.task_id, exc)

    async def hand_back(self, held: Held) -> None:
        async with held.lock:
            await self.leases.nak(held.ack)
            self.finish(held)

    def finish(self, held: Held) -> None:
        if self.held.get(held.task_id) is held:
            del self.held[held.task_id]
        self.finished.append((held.task_id, held.attempt))
        self.spawn(_unsubscribe(held.cancel_sub))
        self.changed()

    # --- pulling for the worker ---------------------------------------------------------------------------
    async def pull_loop(self) -> None:
        puller = PoolPuller(self.nc, self.worker.pool)
        await puller.open()
        try:
            while not self.closed:
                await self.capacity.wait()
                msg = await puller.next_message(self.no_capacity)
                if msg is None:
                    continue
                if not self.capacity.is_set():  # the worker took its slots back meanwhile
                    await self.leases.nak(msg.reply)
                    continue
                self.claiming += 1
                self.changed()
                try:
                    await self._claim(msg)
                finally:
                    self.claiming -= 1
                    self.changed()
        finally:
            await puller.close()

    async def _claim(self, msg: Msg) -> None:
        """Claimed as the worker; refused: termed, as any worker does; the worker never told: handed back."""
        try:
            dispatch = TaskDispatch.model_validate_json(msg.data)
        except ValidationError:
            log.error("terminating a malformed TaskDispatch on %s", msg.subject)
            await self.leases.term(msg.reply)
            return
        request = ClaimRequest(
            task_id=dispatch.task_id,
            attempt=dispatch.attempt,
            worker_key=self.key,
            # a redelivery (count > the holder's) tells the scheduler the holder lost its lease
            delivery=delivery_of(msg.reply, self.worker.pool),
        )
        try:
            claim: ClaimReply = await self.rpc.call(endpoints.Scheduler.CLAIM, request)
        except ServiceError as exc:
            log.warning("claiming %s failed (%s); handing it back", dispatch.task_id, exc.message)
            await self.leases.nak(msg.reply, delay=5)
            return
        if not claim.granted:
            log.info("claim for %s#%d refused: %s", dispatch.task_id, dispatch.attempt, claim.reason)
            await self.leases.term(msg.reply)
            return
        task = claim.task or dispatch
        held = Held(task.task_id, task.attempt, ack=msg.reply)
        self.held[task.task_id] = held
        try:
            # listen before the worker hears of it: a cancel sent the moment the task shows running must land
            await self._listen_for_cancel(held)
            assigned = TaskAssigned(
                task_id=task.task_id,
                attempt=task.attempt,
                worker_id=claim.worker_id or self.worker.worker_id,
                task=task,
                lease=msg.reply,
            )
            await self.send(assigned)
            held.assigned = True
            log.info("assigned %s#%d to remote worker %s", task.task_id, task.attempt, self.worker.worker_id)
        finally:
            if not held.assigned:  # the worker never heard of it: hand it back now, not after ack_wait
                self.held.pop(task.task_id, None)
                await self.leases.nak(msg.reply)
                await _unsubscribe(held.cancel_sub)

    async def _listen_for_cancel(self, held: Held) -> None:
        held.cancel_sub = await self.nc.subscribe(
            subjects.task_cancel(held.task_id), cb=functools.partial(self._on_cancel, held)
        )

    async def _on_cancel(self, held: Held, _msg: Msg) -> None:
        with contextlib.suppress(Exception):
            await self.send(Cancel(task_id=held.task_id, attempt=held.attempt, reason="cancelled"))

    # --- drains -------------------------------------------------------------------------------------------
    async def listen_for_drain(self) -> None:
        self._subs.append(
            await self.nc.subscribe(subjects.worker_drain(self.worker.worker_id), cb=self._on_drain)
        )

    async def _on_drain(self, msg: Msg) -> None:
        if msg.reply:
            self._drain_replies.append(msg.reply)
        with contextlib.suppress(Exception):
            await self.send(Drain())

    async def answer_drains(self, frame: Drained) -> None:
        """The worker finished or handed back its tasks: whoever asked for the drain hears how it went."""
        reply = DrainReply(
            worker_id=self.worker.worker_id, finished=frame.finished, handed_back=frame.handed_back
        )
        while self._drain_replies:
            with contextlib.suppress(Exception):
                await self.nc.publish(self._drain_replies.pop(), reply.model_dump_json().encode())

    async def close(self) -> None:
        """The socket is gone: pulling stops; attempts the worker knew of keep their lease until it lapses."""
        self.closed = True
        self.changed()
        for held in list(self.held.values()):
            await _unsubscribe(held.cancel_sub)
        for sub in self._subs:
            await _unsubscribe(sub)


async def _unsubscribe(sub: Subscription | None) -> None:
    if sub is not None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
