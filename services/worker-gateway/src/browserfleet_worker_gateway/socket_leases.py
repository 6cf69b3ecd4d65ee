"""The TASKS messages a remote worker holds, as its bridge session keeps them: one per claimed attempt, its
lease (the message's acknowledgement subject) settled on the worker's own bus connection, so the server's
allow-lists apply (it may settle its own pool's messages only).

The lease lives while the worker says `PROGRESS` (an in-progress acknowledgement each time); the message is
acknowledged after the attempt's result is on TASK_UPDATES; a socket that dies settles nothing, so JetStream
redelivers the message once its `ack_wait` passes unless the worker came back with its lease first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from browserfleet_contracts import subjects
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

ACK_TIMEOUT_SECONDS = 5.0


class BadLease(ValueError):
    """A `lease` that is not the acknowledgement subject of one of the worker's pool's TASKS messages."""


def delivery_of(ack: str, pool: str) -> int:
    """How many times the message behind `ack` was delivered; BadLease unless it is a TASKS message of one of
    `pool`'s consumers (a worker can only ever settle its own pool's messages: the server says so too)."""
    try:
        meta = Msg.Metadata._from_reply(ack)
    except Exception:
        raise BadLease("not a lease this bridge handed out") from None
    consumers = {subjects.task_run_consumer(pool, p) for p in subjects.PRIORITIES}
    if meta.stream != subjects.TASKS_STREAM or meta.consumer not in consumers:
        raise BadLease("a lease of another pool's task")
    return int(meta.num_delivered)


@dataclass
class Held:
    """One attempt the worker holds. `started`/`finishing` order its frames: nothing but PROGRESS before
    STARTED's siblings, nothing after RESULT. `lock` keeps one attempt's updates in the order they came."""

    task_id: str
    attempt: int
    ack: str
    started: bool = False
    finishing: bool = False
    assigned: bool = False  # TASK_ASSIGNED went out (or the worker resumed it): the worker knows it
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cancel_sub: Subscription | None = None


class Leases:
    """Settling TASKS messages by their acknowledgement subject, on the worker's connection."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc

    async def progress(self, ack: str) -> None:
        await self.nc.publish(ack, b"+WPI")

    async def ack(self, ack: str) -> None:
        """Acknowledged, and confirmed by the server (a lost acknowledgement would rerun a finished attempt)."""
        await self.nc.request(ack, b"+ACK", timeout=ACK_TIMEOUT_SECONDS)

    async def nak(self, ack: str, delay: float | None = None) -> None:
        body = b"-NAK" if not delay else b"-NAK " + json.dumps({"delay": int(delay * 1e9)}).encode()
        with contextlib.suppress(NatsError):  # the connection is gone: the lease lapses, JetStream redelivers
            await self.nc.publish(ack, body)

    async def term(self, ack: str) -> None:
        await self.nc.publish(ack, b"+TERM")
