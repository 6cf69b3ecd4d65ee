"""BatchConsumer on the real (embedded) NATS server: prompt hand-over when idle, batches under a burst,
settling (a raising handler gets its messages again), a clean stop, and the consumer's config applied.

No test asserts on speed: the idle test compares the hand-over with the pull request's `expires` (a consumer
that waited for a batch to fill would hold the message that long), and WAIT_CAP only stops a hang."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import nats
import pytest
from browserfleet_core.batching import BatchConsumer, documentation_router
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

WAIT_CAP = 30.0


@dataclass
class Stream:
    js: JetStreamContext
    name: str
    prefix: str

    def subject(self, suffix: str = "x") -> str:
        return f"{self.prefix}.{suffix}"

    def config(self, **overrides: object) -> ConsumerConfig:
        base: dict[str, object] = {
            "filter_subject": f"{self.prefix}.>",
            "ack_policy": AckPolicy.EXPLICIT,
            "deliver_policy": DeliverPolicy.ALL,
            "ack_wait": 30.0,
            "max_deliver": -1,
            "max_ack_pending": 1000,
        }
        return ConsumerConfig(**{**base, **overrides})  # type: ignore[arg-type]

    async def publish(self, count: int, suffix: str = "x", start: int = 0) -> int:
        seq = 0
        for i in range(start, start + count):
            seq = (await self.js.publish(self.subject(suffix), str(i).encode())).seq
        return seq


@pytest.fixture
async def stream(nc: NatsClient) -> AsyncIterator[Stream]:
    token = secrets.token_hex(4)
    js = nc.jetstream()
    s = Stream(js, f"BATCHTEST_{token}", f"batchtest.{token}")
    await js.add_stream(StreamConfig(name=s.name, subjects=[f"{s.prefix}.>"]))
    try:
        yield s
    finally:
        await js.delete_stream(s.name)


@dataclass
class Recorder:
    """A handler that records every batch and can be held (to let messages pile up)."""

    batches: list[list[Msg]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    called: asyncio.Event = field(default_factory=asyncio.Event)
    hold_first: bool = False
    before: Callable[[list[Msg]], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        if not self.hold_first:
            self.gate.set()

    async def __call__(self, batch: list[Msg]) -> None:
        self.batches.append(batch)
        self.called.set()
        await self.gate.wait()
        if self.before is not None:
            await self.before(batch)

    @property
    def values(self) -> list[int]:
        return [int(m.data) for b in self.batches for m in b]

    async def wait_for(self, count: int) -> None:
        await until(lambda: len(self.values) >= count)


async def until(condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds (WAIT_CAP only stops a hang)."""

    async def poll() -> None:
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT_CAP)


async def _settled(js: JetStreamContext, stream: str, durable: str, seq: int) -> None:
    """Every message up to `seq` acknowledged (or terminated) by `durable`."""

    deadline = asyncio.get_running_loop().time() + WAIT_CAP
    while True:
        info = await js.consumer_info(stream, durable)
        if info.ack_floor.stream_seq >= seq and not info.num_ack_pending:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{durable} did not settle up to #{seq}: {info}")
        await asyncio.sleep(0.02)


async def _publish_handle_settle(stream: Stream, handler: Recorder, durable: str, count: int) -> None:
    """Publish `count` messages; wait until the handler has them all and `durable` has settled them."""
    seq = await stream.publish(count)
    await handler.wait_for(count)
    await _settled(stream.js, stream.name, durable, seq)


async def _queue_behind_the_held_batch(
    consumer: BatchConsumer, handler: Recorder, stream: Stream, count: int, pending: int
) -> int:
    """Hand the held handler one message, publish `count` more behind it and wait until the consumer has
    fetched `pending` of them; returns the last one's stream sequence."""
    await stream.publish(1)
    await asyncio.wait_for(handler.called.wait(), WAIT_CAP)
    seq = await stream.publish(count, start=1)
    await until(lambda: consumer.pending >= pending)
    return seq


async def test_idle_consumer_hands_a_lone_message_over_without_waiting_for_a_batch(
    nc: NatsClient, stream: Stream
) -> None:
    expires = 20.0  # a consumer that waits for its batch to fill would hold the message this long
    handler = Recorder()
    consumer = BatchConsumer(
        nc,
        stream=stream.name,
        durable="idle",
        handler=handler,
        config=stream.config(),
        max_batch=64,
        expires=expires,
    )
    await consumer.start()
    try:
        await asyncio.sleep(0.2)  # the pull request is outstanding and idle on the server
        seq = await stream.publish(1)
        await asyncio.wait_for(handler.called.wait(), expires / 4)
        assert handler.values == [0]
        await _settled(stream.js, stream.name, "idle", seq)  # acked when the handler returned

        # and again on the same (partly consumed) pull request
        handler.called.clear()
        seq = await stream.publish(1, start=1)
        await asyncio.wait_for(handler.called.wait(), expires / 4)
        assert handler.values == [0, 1]
        await _settled(stream.js, stream.name, "idle", seq)
        assert consumer.pulls == 1  # one pull request served both
    finally:
        await consumer.stop()


async def test_with_a_linger_what_follows_a_lone_message_shortly_joins_its_batch(
    nc: NatsClient, stream: Stream
) -> None:
    handler = Recorder()
    consumer = BatchConsumer(
        nc,
        stream=stream.name,
        durable="linger",
        handler=handler,
        config=stream.config(),
        max_batch=64,
        linger=1.0,  # generous: the publishes below must land within it even on a loaded machine
    )
    await consumer.start()
    try:
        await asyncio.sleep(0.2)  # idle: the first message would be handed over alone at once
        await stream.publish(1)
        await asyncio.sleep(0.05)
        seq = await stream.publish(4, start=1)
        await handler.wait_for(5)
        assert [len(b) for b in handler.batches] == [5]
        await _settled(stream.js, stream.name, "linger", seq)
    finally:
        await consumer.stop()


async def test_an_expired_pull_ends_with_408_on_its_own_reply_subject(nc: NatsClient, stream: Stream) -> None:
    """What BatchConsumer relies on to tell the end of its current pull from an earlier one's."""
    await stream.js.add_consumer(stream.name, stream.config(durable_name="probe", name="probe"))
    inbox = nc.new_inbox()
    sub = await nc.subscribe(f"{inbox}.*")
    try:
        body = {"batch": 5, "expires": 200_000_000}
        await nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{stream.name}.probe", json.dumps(body).encode(), reply=f"{inbox}.7"
        )
        msg = await sub.next_msg(timeout=WAIT_CAP)
        assert msg.subject == f"{inbox}.7"
        assert msg.headers is not None
        assert msg.headers["Status"] == "408"
        assert msg.data == b""
    finally:
        await sub.unsubscribe()


async def test_pulls_are_renewed_after_they_expire(nc: NatsClient, stream: Stream) -> None:
    handler = Recorder()
    consumer = BatchConsumer(
        nc, stream=stream.name, durable="renew", handler=handler, config=stream.config(), expires=0.2
    )
    await consumer.start()
    try:
        await until(lambda: consumer.pulls >= 4)
        await _publish_handle_settle(stream, handler, "renew", 3)
    finally:
        await consumer.stop()


async def test_a_burst_arrives_in_batches(nc: NatsClient, stream: Stream) -> None:
    handler = Recorder(hold_first=True)
    consumer = BatchConsumer(
        nc, stream=stream.name, durable="burst", handler=handler, config=stream.config(), max_batch=16
    )
    await consumer.start()
    try:
        # while the first batch is in hand, a burst queues up
        seq = await _queue_behind_the_held_batch(consumer, handler, stream, 40, pending=16)
        handler.gate.set()
        await handler.wait_for(41)
        await _settled(stream.js, stream.name, "burst", seq)
    finally:
        await consumer.stop()
    sizes = [len(b) for b in handler.batches]
    assert sizes[0] == 1
    assert sizes[1] == 16  # everything that was waiting, up to max_batch
    assert max(sizes) <= 16
    assert sorted(handler.values) == list(range(41))
    assert handler.values == list(range(41))  # in order, nothing twice


async def test_a_raising_handler_gets_its_messages_again(nc: NatsClient, stream: Stream) -> None:
    """Unsettled messages of a failed batch are nak'ed and redelivered; one the handler terminated is not."""
    failures = 0

    async def before(batch: list[Msg]) -> None:
        nonlocal failures
        if any(m.metadata.num_delivered == 1 for m in batch):
            failures += 1
            for m in batch:
                if m.data == b"2":
                    await m.term()
            raise RuntimeError("boom")

    handler = Recorder(hold_first=True, before=before)
    consumer = BatchConsumer(
        nc, stream=stream.name, durable="failing", handler=handler, config=stream.config()
    )
    await consumer.start()
    try:
        seq = await _queue_behind_the_held_batch(consumer, handler, stream, 4, pending=4)
        handler.gate.set()
        await _settled(stream.js, stream.name, "failing", seq)
    finally:
        await consumer.stop()
    assert failures >= 2  # [0], then [1, 2, 3, 4]
    delivered = [(int(m.data), m.metadata.num_delivered) for b in handler.batches for m in b]
    assert sorted(v for v, n in delivered if n == 1) == [0, 1, 2, 3, 4]
    assert {v for v, n in delivered if n > 1} == {0, 1, 3, 4}  # 2 was terminated by the handler


async def test_stop_lets_the_batch_in_hand_finish_and_gives_back_the_rest(
    nc: NatsClient, stream: Stream
) -> None:
    handler = Recorder(hold_first=True)
    consumer = BatchConsumer(
        nc,
        stream=stream.name,
        durable="stopping",
        handler=handler,
        config=stream.config(ack_wait=WAIT_CAP * 3),
        expires=30.0,
    )
    await consumer.start()
    seq = await _queue_behind_the_held_batch(consumer, handler, stream, 5, pending=5)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done()  # the batch in hand is not abandoned
    handler.gate.set()
    await asyncio.wait_for(stopping, WAIT_CAP)
    assert handler.values == [0]  # nothing new was started after stop()

    info = await stream.js.consumer_info(stream.name, "stopping")
    assert info.delivered.stream_seq == 6  # 1..5 had been fetched too
    await stream.publish(1, start=6)
    await asyncio.sleep(0.2)
    assert handler.values == [0]  # no longer subscribed

    # another consumer on the same durable takes over the rest: 1..5 at once, since stop() gave them back
    # (the durable's ack_wait is longer than WAIT_CAP, so left to time out they would come too late)
    successor = Recorder()
    again = BatchConsumer(nc, stream=stream.name, durable="stopping", handler=successor)
    await again.start()
    try:
        await successor.wait_for(6)
        await _settled(stream.js, stream.name, "stopping", seq + 1)
    finally:
        await again.stop()
    assert sorted(successor.values) == [1, 2, 3, 4, 5, 6]
    await consumer.stop()  # a second stop is a no-op


async def test_start_creates_then_updates_the_durable(nc: NatsClient, stream: Stream) -> None:
    handler = Recorder()
    first = BatchConsumer(
        nc, stream=stream.name, durable="cfg", handler=handler, config=stream.config(ack_wait=30.0)
    )
    await first.start()
    await first.stop()
    info = await stream.js.consumer_info(stream.name, "cfg")
    assert info.config.ack_wait == 30.0
    assert info.config.deliver_subject is None  # a pull consumer

    second = BatchConsumer(
        nc, stream=stream.name, durable="cfg", handler=handler, config=stream.config(ack_wait=12.0)
    )
    await second.start()
    try:
        info = await stream.js.consumer_info(stream.name, "cfg")
        assert info.config.ack_wait == 12.0
        await _publish_handle_settle(stream, handler, "cfg", 2)
    finally:
        await second.stop()


async def test_without_config_the_durable_must_exist(nc: NatsClient, stream: Stream) -> None:
    consumer = BatchConsumer(nc, stream=stream.name, durable="missing", handler=Recorder())
    with pytest.raises(nats.js.errors.NotFoundError):
        await consumer.start()


def test_documentation_router_describes_the_consumer_for_asyncapi() -> None:
    """A BatchConsumer is not a FastStream subscriber: its documentation-only declaration puts it (with
    its payload schema) in the AsyncAPI document, and handling a message with it is refused."""
    from faststream.nats import NatsBroker
    from faststream.specification import AsyncAPI
    from pydantic import BaseModel

    class Thing(BaseModel):
        name: str
        size: int

    broker = NatsBroker("nats://nats:4222")
    broker.include_router(
        documentation_router(
            "things.>",
            stream="THINGS",
            durable="thing-eater",
            payload=Thing,
            title="eater.things",
            description="Things, eaten in batches.",
        )
    )
    document = AsyncAPI(broker, title="t", version="1").to_specification().to_jsonable()
    channel = document["channels"]["eater.things"]
    assert channel["address"] == "things.>"
    assert channel["description"] == "Things, eaten in batches."
    schemas = document["components"]["schemas"]
    assert set(schemas["Thing"]["properties"]) == {"name", "size"}
