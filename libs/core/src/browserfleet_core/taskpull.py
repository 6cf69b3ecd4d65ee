"""Pulling a pool's TASKS messages, urgent first: what an in-cluster worker does for itself (the worker's
consumer.py) and worker-gateway's bridge does for a remote worker on its socket, both on a connection that is
the worker's own bus identity (it may pull its own pool's consumers only).

Each priority is a durable pull consumer (`pool-<pool>-<priority>`). A pull is a no-wait request (answered at
once with a message or a 404), and an idle puller sleeps on the pool's doorbell (a plain subscription to the
dispatch subjects) instead of lingering in a long pull on one priority. The ring's subject names its priority,
so a puller probes only the priorities that may hold a message (rung, or not yet found empty) instead of all
four, urgent first, each one a round trip; every IDLE_WAIT_SECONDS it probes all four, because a redelivery
(a lease that lapsed, a message handed back) rings nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator

import nats.errors
from browserfleet_contracts import subjects
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0  # a no-wait pull answers at once; this only bounds a server that does not
IDLE_WAIT_SECONDS = 1.0  # with no doorbell, re-probe this often: redeliveries after a lost lease ring none
# A ring can come before the consumer offers the message it announces (JetStream hands a stored message to
# its consumers asynchronously), so a probe right after a ring may find nothing yet: probe again after these
# short pauses before the long wait. Without them, a share of idle-path tasks waited the full
# IDLE_WAIT_SECONDS (measured: a p90 of ~1 s from submit to start at 10 tasks/s).
RING_REPROBE_SECONDS = (0.002, 0.005, 0.01, 0.025, 0.05)


class PoolPuller:
    """`next_message()` is the pool's next TASKS message (urgent first), waiting for one while none is there."""

    def __init__(self, nc: NatsClient, pool: str) -> None:
        self.nc = nc
        self.pool = pool
        self.durables = [subjects.task_run_consumer(pool, p) for p in subjects.PRIORITIES]  # urgent first
        self.doorbell = asyncio.Event()  # rung by every dispatch published to this pool
        self._priority_index = {p: i for i, p in enumerate(subjects.PRIORITIES)}
        # indexes into `durables` that may hold a message: rung since their last empty probe, or never probed
        self._maybe: set[int] = set(range(len(self.durables)))
        # rings per priority: a probe's 404 clears its priority only if no ring came while it was in flight
        self._rings = [0] * len(self.durables)
        self._all_probed_at = 0.0
        self._bell: Subscription | None = None
        self._inbox: Subscription | None = None

    async def open(self) -> None:
        # JetStream also delivers each published dispatch to plain subscribers of its subject: a doorbell
        # that wakes an idle puller at once, instead of it lingering in a long pull on one priority.
        self._bell = await self.nc.subscribe(subjects.task_run(self.pool, "*"), cb=self._ring)
        # pulled messages arrive on this inbox under their own subject, which nc.request's mux cannot route
        self._inbox = await self.nc.subscribe(self.nc.new_inbox())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._bell is not None:
                await self._bell.unsubscribe()
            if self._inbox is not None:
                await self._inbox.unsubscribe()

    async def _ring(self, msg: Msg) -> None:
        index = self._priority_index.get(msg.subject.rsplit(".", 1)[-1])
        if index is None:
            self._maybe.update(range(len(self.durables)))
        else:
            self._maybe.add(index)
            self._rings[index] += 1
        self.doorbell.set()

    async def next_message(self, halt: asyncio.Event) -> Msg | None:
        """Urgent first: a no-wait pull on each priority that may hold a message (one local round trip
        each), then sleep until the pool's doorbell rings (a new dispatch) or IDLE_WAIT_SECONDS pass (a
        redelivery rings none). None once `halt` is set."""
        reprobe: Iterator[float] = iter(())
        woke: set[int] = set()  # rung by the wake-up this re-probe sequence follows: kept until it ends
        everything = set(range(len(self.durables)))
        while not halt.is_set():
            self.doorbell.clear()  # before probing: a dispatch published mid-probe re-wakes us at once
            if time.monotonic() - self._all_probed_at >= IDLE_WAIT_SECONDS:
                # a busy pool rings often and never idles out: redeliveries are still found this often
                self._maybe |= everything
            if self._maybe >= everything:
                self._all_probed_at = time.monotonic()
            for index in sorted(self._maybe | woke):
                if halt.is_set():
                    return None
                rings = self._rings[index]
                try:
                    msg = await self.pull_no_wait(self.durables[index])
                except (nats.errors.Error, TimeoutError) as exc:
                    log.warning("pulling tasks from %s failed (%s); retrying", self.durables[index], exc)
                    self._maybe |= everything
                    await asyncio.sleep(1.0)
                    break
                if msg is not None:  # its priority (and those after it, not probed) may hold more
                    if halt.is_set():  # fetched while halting: give it straight back
                        with contextlib.suppress(Exception):
                            await msg.nak()
                        return None
                    return msg
                if self._rings[index] == rings:
                    self._maybe.discard(index)
            else:
                pause = next(reprobe, None)
                if pause is not None:
                    await asyncio.sleep(pause)
                    continue
                bell = asyncio.create_task(self.doorbell.wait())
                halted = asyncio.create_task(halt.wait())
                done, _ = await asyncio.wait(
                    {bell, halted}, timeout=IDLE_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                bell.cancel()
                halted.cancel()
                if bell in done:
                    # A ring can come before the consumer offers its message: the re-probes after it keep
                    # asking the rung priorities (all of them if the bell rang without naming one).
                    woke = set(self._maybe) or everything
                    reprobe = iter(RING_REPROBE_SECONDS)
                else:  # idled out (unless halted): a redelivery rings nothing, so ask every priority again
                    woke = set()
                    reprobe = iter(())
                    if not done:
                        self._maybe |= everything
        return None

    async def pull_no_wait(self, durable: str) -> Msg | None:
        """One message from `durable` if it has one now, else None, without leaving a pull request behind.

        nats-py's fetch(1) always lingers until its expiry; the JetStream API's `no_wait` answers at once
        with the message or a 404 status, so probing four priorities costs four round trips, not seconds.
        """
        assert self._inbox is not None
        request = json.dumps({"batch": 1, "no_wait": True}).encode()
        # One probe in flight at a time (the pull loop is sequential), so the inbox needs no multiplexing;
        # a late answer to a timed-out probe is read by the next one and is still a real message or a 404.
        await self.nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{subjects.TASKS_STREAM}.{durable}", request, reply=self._inbox.subject
        )
        reply = await self._inbox.next_msg(timeout=PROBE_TIMEOUT_SECONDS)
        status = (reply.headers or {}).get("Status")
        if status is not None:
            if status in ("404", "408", "409"):  # no messages / request expired / max waiting: nothing now
                return None
            raise nats.errors.Error(
                f"pull from {durable} answered {status} {(reply.headers or {}).get('Description', '')}"
            )
        return reply
