"""The consumer's slots on a real NATS server: a handler that says its browser work is over (`free_slot`) lets
its slot take the next message while it finishes (stores its result, acks); the message stays its own until
then."""

from __future__ import annotations

import asyncio
import contextlib

import nats
from browserfleet_contracts.tasks import TaskDispatch
from browserfleet_core.streams import ensure_pool_consumers, ensure_streams
from browserfleet_devkit.testing import unique_name
from browserfleet_worker.consumer import TaskConsumer, free_slot
from nats.aio.msg import Msg

from .conftest import dispatch


async def test_a_freed_slot_takes_the_next_message_while_the_first_finishes(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    pool = unique_name("pool")
    await ensure_pool_consumers(js, pool)
    first, second = unique_name("first"), unique_name("second")
    started: dict[str, asyncio.Event] = {first: asyncio.Event(), second: asyncio.Event()}
    finish_first = asyncio.Event()

    async def handle(msg: Msg) -> None:
        task_id = TaskDispatch.model_validate_json(msg.data).task_id
        started[task_id].set()
        if task_id == first:
            free_slot()
            free_slot()  # once only: a second call gives back nothing more
            await finish_first.wait()  # its result being stored
        await msg.ack()

    consumer = TaskConsumer(nc, pool, handle, slots=1, lease_extend_seconds=30)
    await consumer.open()
    halt = asyncio.Event()
    loop = asyncio.create_task(consumer.pull_loop(halt))
    try:
        await dispatch(js, pool, first, [], timeout_seconds=60)
        await asyncio.wait_for(started[first].wait(), 30)
        await dispatch(js, pool, second, [], timeout_seconds=60)
        # one slot, and the first message not yet settled: the second runs because the first freed its slot
        await asyncio.wait_for(started[second].wait(), 30)
        assert len(consumer.running) >= 1  # the first is still held (its lease, a drain wait for it)
        assert any(not t.done() for t in consumer.running)
        finish_first.set()
        assert (await consumer.drain(30))[1] == 0  # nothing handed back
        halt.set()
        await asyncio.wait_for(loop, 10)
        assert consumer._slots._value == 1  # every slot given back, once
    finally:
        halt.set()
        finish_first.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(loop, 10)
        await consumer.close()
        await nc.close()
