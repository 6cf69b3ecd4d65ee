"""The worker's side of JetStream: pulling its pool's TASKS messages into free slots (urgent first, through
`browserfleet_core.taskpull`), holding their leases while they run, and handing them back when shutdown runs
out of grace. A remote worker (WebSocket) has none of this: worker-gateway's bridge pulls and holds for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from browserfleet_core.taskpull import PoolPuller
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]


class _Slot:
    """One message's hold on a slot, given back once: when its handler says its browser work is over
    (`free_slot`), else when the handler ends."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self._held = True

    def free(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()


_current: ContextVar[_Slot | None] = ContextVar("browserfleet_worker_slot", default=None)


def free_slot() -> None:
    """The running handler's browser work is over (its context is closed or closing); what is left is storing
    its result and acking. Its slot takes the next message meanwhile: the result's round trip is then off
    the slot's path from one task to the next. The message stays held (lease, drain) until the handler ends."""
    slot = _current.get()
    if slot is not None:
        slot.free()


class TaskConsumer(PoolPuller):
    """Runs `handle` on each TASKS message of `pool`, at most `slots` at a time, until halted.

    `handle` acks, naks or terms the message itself; while it runs the message's lease is extended every
    `lease_extend_seconds`, and a handler cancelled by shutdown hands its message back at once.
    """

    def __init__(
        self, nc: NatsClient, pool: str, handle: Handler, *, slots: int, lease_extend_seconds: float
    ) -> None:
        super().__init__(nc, pool)
        self.handle = handle
        self.lease_extend_seconds = lease_extend_seconds
        self.running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(slots)

    # -- pulling --
    async def pull_loop(self, halt: asyncio.Event) -> None:
        while not halt.is_set():
            if not await self._acquire_slot(halt):
                return
            msg = await self.next_message(halt)
            if msg is None:
                self._slots.release()
                continue
            slot = _Slot(self._slots)
            task = asyncio.create_task(self._run(msg, slot))
            self.running.add(task)
            task.add_done_callback(functools.partial(self._finished, slot=slot))

    async def _acquire_slot(self, halt: asyncio.Event) -> bool:
        """A free slot, or False once `halt` is set (a full worker must still notice SIGTERM at once)."""
        slot = asyncio.create_task(self._slots.acquire())
        halted = asyncio.create_task(halt.wait())
        await asyncio.wait({slot, halted}, return_when=asyncio.FIRST_COMPLETED)
        halted.cancel()
        if slot.done() and not slot.cancelled():
            if halt.is_set():
                self._slots.release()
                return False
            return True
        slot.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slot
        if slot.done() and not slot.cancelled():  # it got the slot while being cancelled
            self._slots.release()
        return False

    def _finished(self, task: asyncio.Task[None], slot: _Slot) -> None:
        self.running.discard(task)
        slot.free()

    # -- one message's lease --
    async def _run(self, msg: Msg, slot: _Slot) -> None:
        _current.set(slot)  # this task's own context: its handler (and what it starts) sees this slot
        lease = asyncio.create_task(self._extend_lease(msg))
        try:
            await self.handle(msg)
        except asyncio.CancelledError:
            # shutdown ran out of grace: hand the message back now instead of after ack_wait
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception:
            log.exception("processing a task message failed; it will be redelivered")
        finally:
            lease.cancel()

    async def _extend_lease(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.lease_extend_seconds)
            try:
                await msg.in_progress()
            except Exception as exc:
                log.debug("extending a lease failed: %s", exc)

    # -- shutdown --
    async def drain(self, grace: float) -> tuple[int, int]:
        """Waits up to `grace` for running tasks; the rest are cancelled and handed back (nak).
        Returns (finished, handed back)."""
        if not self.running:
            return 0, 0
        log.info("waiting up to %.0f s for %d running task(s)", grace, len(self.running))
        done, pending = await asyncio.wait(set(self.running), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("handing %d task(s) back for redelivery: the grace period ran out", len(pending))
            await asyncio.wait(pending)
        return len(done), len(pending)
