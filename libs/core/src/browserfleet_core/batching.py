"""`BatchConsumer`: a JetStream pull consumer that hands its handler *everything that is waiting* as one batch.

Use it where one database transaction per message is the cost (a consumer of a busy stream that writes
a row or two per message): the handler gets a list and can do one transaction for all of it.

    consumer = BatchConsumer(
        nc, stream="EVENTS", durable="webhooks", handler=on_events,
        config=ConsumerConfig(filter_subject="events.>", ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
        max_batch=64, expires=5.0,
    )
    await consumer.start()
    ...
    await consumer.stop()

Why not nats-py's `PullSubscription.fetch(n)` with n > 1: it holds the first message until n have arrived
or its timeout ends (`_fetch_n`), so an idle consumer answers a lone message only after the timeout, and
`fetch(1)` pays one pull round trip per message. Here one pull request is outstanding at a time
(`{"batch": max_batch, "expires": expires}` on `$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`, replies to a
private inbox); messages land on a queue as they arrive, and the loop waits for the first one, then takes
whatever else is queued *without waiting* (up to `max_batch`) and calls the handler. Under load the batches
grow by themselves (messages queue while the handler runs); when idle a message is handled at once.

A new pull request goes out as soon as the previous one is exhausted (`max_batch` messages delivered) or
ended by the server (status 408 on expiry; 409/404/503 and other statuses end it too, and are retried after
a short pause), and at most about two batches' worth sit unhandled in the process. A pull request the server
lost (a reconnect, a restarted server) is re-issued after `expires` at the latest, at once when the client
saw a reconnect.

Settling (the handler's contract): the handler may `ack()`, `nak(delay=...)` or `term()` any message
itself. When it returns, every message it left unsettled is acked; when it raises, every message it left
unsettled is nak'ed (after `nak_delay` seconds, if set) and JetStream offers it again. One batch is handled
at a time, in delivery order.

The durable consumer must be a pull consumer with explicit acks. Pass `config` and `start()` creates it,
or updates the existing durable of that name to it (JetStream's create-or-update); without `config` the
durable must already exist.

`documentation_router()` declares such a consumer to FastStream's AsyncAPI generator only (a broker built
for documentation includes it; a running broker must not, or FastStream would consume the durable too).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.nats import JStream, NatsRouter, PullSub
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig
from pydantic import BaseModel, ValidationError

from .streams import patiently

log = logging.getLogger(__name__)


def durable_config(
    durable: str, filter_subject: str, *, max_ack_pending: int, ack_wait: float = 30.0
) -> ConsumerConfig:
    """The durable pull consumer a BatchConsumer is made for: every message from the start of the stream,
    explicit acks, redelivered after `ack_wait` without limit (a message is never dropped for having
    failed often; a malformed one is terminated by its handler)."""
    from nats.js.api import AckPolicy as JsAckPolicy
    from nats.js.api import DeliverPolicy

    return ConsumerConfig(
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=JsAckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
    )


Handler = Callable[[list[Msg]], Awaitable[None]]

STATUS_HEADER = "Status"
HEARTBEAT = "100"
REQUEST_TIMEOUT = "408"  # the pull request expired: the normal end of an idle pull
# a pull that ended with any other status (409 leadership change / consumer deleted / limits, 404, 503 no
# responders: the durable is gone) is re-issued after this pause rather than in a tight loop
RETRY_PAUSE_SECONDS = 1.0
# a pull request with no answer after `expires` + this is presumed lost
LOST_GRACE_SECONDS = 1.0
# an idle loop looks at the connection's reconnect count this often (a reconnect loses the pull request)
RECHECK_SECONDS = 1.0


@dataclasses.dataclass(eq=False)
class BatchConsumer:
    """Pull consumer of `durable` on `stream` handing `handler` lists of up to `max_batch` messages.

    `nc`: a connected nats-py client (e.g. a FastStream broker's `connection`); `expires`: seconds a pull
    request waits on the server; `nak_delay`: redelivery delay for the messages of a batch whose handler
    raised; `linger`: seconds a batch waits after its first message for more to join (0: none; for a
    consumer whose handler costs per batch and whose latency does not matter at the millisecond);
    `api_prefix`: the JetStream API prefix (a JetStream domain changes it).
    """

    nc: NatsClient
    _: dataclasses.KW_ONLY
    stream: str
    durable: str
    handler: Handler
    config: ConsumerConfig | None = None
    max_batch: int = 64
    expires: float = 5.0
    nak_delay: float | None = None
    linger: float = 0.0
    api_prefix: dataclasses.InitVar[str] = "$JS.API"

    def __post_init__(self, api_prefix: str) -> None:
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if self.expires < 0.01:
            raise ValueError("expires must be at least 0.01 s")
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
        self._queue: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._inbox = ""
        # the one outstanding pull request: its reply subject, what it may still deliver, when it is lost
        self._pull_seq = 0
        self._pull_reply: str | None = None
        self._pull_remaining = 0
        self._pull_deadline = 0.0
        self._retry_at = 0.0
        self._reconnects = 0
        self.batches = 0  # batches handled so far (diagnostics and tests)
        self.pulls = 0  # pull requests sent so far

    @property
    def pending(self) -> int:
        """Messages fetched and waiting to be handled."""
        return self._queue.qsize()

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create/update the durable (when `config` was given), subscribe the inbox, send the first pull."""
        if self._task is not None:
            raise RuntimeError("BatchConsumer already started")
        js = self.nc.jetstream()
        what = f"consumer {self.durable} on {self.stream}"
        if self.config is not None:
            config = dataclasses.replace(self.config, name=self.durable, durable_name=self.durable)
            await patiently(what, functools.partial(js.add_consumer, self.stream, config=config))
        else:  # NotFoundError when it does not exist
            await patiently(what, functools.partial(js.consumer_info, self.stream, self.durable))
        self._stopping = False
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_message)
        self._reconnects = self.nc.stats["reconnects"]
        await self._pull()
        self._task = asyncio.create_task(self._run(), name=f"batch-consumer-{self.stream}-{self.durable}")

    async def stop(self) -> None:
        """Stop pulling, let the batch in hand finish, and give back what was fetched but not handled
        (nak'ed without delay, so another replica takes it at once)."""
        if self._task is None:
            return
        self._stopping = True
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._queue.put_nowait(None)  # wakes an idle loop
        try:
            await self._task
        finally:
            self._task = None
        while not self._queue.empty():
            msg = self._queue.get_nowait()
            if msg is not None and not msg.is_acked:
                with contextlib.suppress(Exception):
                    await msg.nak()

    # --- pulling -------------------------------------------------------------------------------------

    async def _pull(self) -> None:
        """Send a pull request, unless one is outstanding, we are stopping, a retry pause runs, or about
        two batches already wait to be handled."""
        now = time.monotonic()
        if (
            self._stopping
            or self._pull_reply is not None
            or now < self._retry_at
            or self._queue.qsize() >= self.max_batch
        ):
            return
        self._pull_seq += 1
        self.pulls += 1
        reply = f"{self._inbox}.{self._pull_seq}"
        self._pull_reply = reply
        self._pull_remaining = self.max_batch
        self._pull_deadline = now + self.expires + LOST_GRACE_SECONDS
        body = {"batch": self.max_batch, "expires": int(self.expires * 1_000_000_000)}
        try:
            await self.nc.publish(self._next_subject, json.dumps(body).encode(), reply=reply)
        except Exception:
            log.warning("pull request on %s/%s failed; retrying", self.stream, self.durable, exc_info=True)
            self._pull_reply = None
            self._retry_at = now + RETRY_PAUSE_SECONDS

    def _pull_ended(self, *, pause: bool) -> None:
        self._pull_reply = None
        if pause:
            self._retry_at = time.monotonic() + RETRY_PAUSE_SECONDS

    async def _on_message(self, msg: Msg) -> None:
        """Inbox callback (nats-py's subscription task): queue messages, read statuses, keep one pull out."""
        status = msg.headers.get(STATUS_HEADER) if msg.headers else None
        if status is None:
            self._queue.put_nowait(msg)
            if self._pull_reply is not None:
                self._pull_remaining -= 1
                if self._pull_remaining <= 0:
                    self._pull_ended(pause=False)
        elif status == HEARTBEAT:
            return
        elif msg.subject != self._pull_reply:
            return  # the end of an earlier request we already replaced
        elif status == REQUEST_TIMEOUT:
            self._pull_ended(pause=False)
        else:
            description = msg.headers.get("Description", "") if msg.headers else ""
            log.warning("pull on %s/%s ended: %s %s", self.stream, self.durable, status, description)
            self._pull_ended(pause=True)
            self._queue.put_nowait(None)  # let the loop schedule the retry
            return
        await self._pull()

    # --- handling ------------------------------------------------------------------------------------

    def _wait_seconds(self) -> float:
        now = time.monotonic()
        if self._pull_reply is None:
            until = self._retry_at if self._queue.qsize() < self.max_batch else now + RECHECK_SECONDS
        else:
            until = self._pull_deadline
        return max(0.0, min(until - now, RECHECK_SECONDS))

    def _check_pull(self) -> None:
        """Forget a pull request that cannot deliver any more: presumed lost after its deadline, or lost
        with the connection (the server forgets a disconnected client's pull requests)."""
        reconnects = self.nc.stats["reconnects"]
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._pull_reply = None
        elif self._pull_reply is not None and time.monotonic() > self._pull_deadline:
            log.info("pull on %s/%s got no answer in time; sending another", self.stream, self.durable)
            self._pull_reply = None

    async def _run(self) -> None:
        while not self._stopping:
            self._check_pull()
            await self._pull()
            try:
                first = await asyncio.wait_for(self._queue.get(), self._wait_seconds())
            except TimeoutError:
                continue
            if first is None:
                continue
            if self.linger > 0 and self._queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.linger)
            batch = [first]
            while len(batch) < self.max_batch and not self._queue.empty():
                msg = self._queue.get_nowait()
                if msg is not None:
                    batch.append(msg)
            await self._handle(batch)
            self.batches += 1

    async def _handle(self, batch: list[Msg]) -> None:
        try:
            await self.handler(batch)
        except Exception:
            log.exception(
                "batch handler of %s/%s failed; %d message(s) will be offered again",
                self.stream,
                self.durable,
                len(batch),
            )
            await _settle(batch, lambda m: m.nak(delay=self.nak_delay))
        else:
            await _settle(batch, lambda m: m.ack())


async def _settle(batch: list[Msg], how: Callable[[Msg], Awaitable[None]]) -> None:
    for msg in batch:
        if msg.is_acked:
            continue
        try:
            await how(msg)
        except Exception:
            # the connection is gone: JetStream offers the message again after ack_wait
            log.warning("could not settle a message of %s", msg.subject, exc_info=True)


def documentation_router(
    subject: str,
    *,
    stream: str,
    durable: str,
    payload: type[BaseModel],
    title: str,
    description: str,
    config: ConsumerConfig | None = None,
) -> NatsRouter:
    """A router that only *describes* a BatchConsumer for the AsyncAPI document (FastStream generates it
    from brokers). Include it in a broker built for documentation, never in one that starts: FastStream
    would then consume the same durable."""
    router = NatsRouter()

    async def described(body: Any) -> None:
        raise RuntimeError(f"{title} is documentation only; the consumer is a BatchConsumer")

    described.__annotations__ = {"body": payload, "return": None}
    router.subscriber(
        subject,
        stream=JStream(stream, declare=False),
        durable=durable,
        config=config,
        pull_sub=PullSub(),
        ack_policy=AckPolicy.MANUAL,
        title=title,
        description=description,
    )(described)
    return router


M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


async def parse_batch(msgs: list[Msg], model: type[M]) -> list[tuple[Msg, M]]:
    """Each message with its payload; one that can never parse is terminated (redelivering it cannot help)."""
    parsed: list[tuple[Msg, M]] = []
    for msg in msgs:
        try:
            parsed.append((msg, model.model_validate_json(msg.data)))
        except ValidationError as exc:
            log.error(
                "terminating a malformed %s on %s: %s",
                model.__name__,
                msg.subject,
                exc.errors(include_input=False, include_url=False)[:3],
            )
            await msg.term()
    return parsed


async def record_each_or_all(
    items: list[tuple[Msg, M]],
    record: Callable[[list[M]], Awaitable[R]],
    *,
    nak_delay: float,
    what: str,
) -> list[R]:
    """`record` everything in one call (one transaction); if that fails, each item in a call of its own,
    so one that cannot be recorded fails alone and is nak'ed (after `nak_delay`, so an outage is not a hot
    loop) while the rest are recorded. Returns what the successful calls returned. `record` must be safe to
    run again after a rollback. Messages left unsettled are acked by the BatchConsumer afterwards."""
    if not items:
        return []
    try:
        return [await record([payload for _, payload in items])]
    except Exception:
        if len(items) == 1:
            log.exception("recording a %s failed; it will be offered again", what)
            await items[0][0].nak(delay=nak_delay)
            return []
        log.warning(
            "recording %d %ss at once failed; recording them one by one", len(items), what, exc_info=True
        )
    results: list[R] = []
    for msg, payload in items:
        try:
            results.append(await record([payload]))
        except Exception:
            log.exception("recording a %s failed; it will be offered again", what)
            await msg.nak(delay=nak_delay)
    return results
