"""PoolPuller on the real (embedded) NATS server with the platform's TASKS stream and pool consumers: it
probes only the priorities a ring named (one round trip for a normal task, not three), still takes urgent
first, and still finds a message that rang nothing (a redelivery) while a busy pool keeps ringing.

Each test has a pool of its own. WAIT_CAP only stops a hang; no test asserts on speed."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from browserfleet_contracts import subjects
from browserfleet_core import taskpull
from browserfleet_core.streams import ensure_pool_consumers, ensure_streams
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

WAIT_CAP = 30.0


class CountingPuller(taskpull.PoolPuller):
    """The puller, with the durable of every probe it makes recorded."""

    def __init__(self, nc: NatsClient, pool: str) -> None:
        super().__init__(nc, pool)
        self.probes: list[str] = []

    async def pull_no_wait(self, durable: str) -> Msg | None:
        self.probes.append(durable.rsplit("-", 1)[-1])
        return await super().pull_no_wait(durable)


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    jsc = nc.jetstream()
    await ensure_streams(jsc, artifact_retention_days=1)
    return jsc


@pytest.fixture
async def pool(js: JetStreamContext) -> str:
    name = f"pull{secrets.token_hex(4)}"
    await ensure_pool_consumers(js, name, ack_wait=30.0)
    return name


@pytest.fixture
async def puller(nc: NatsClient, pool: str) -> AsyncIterator[CountingPuller]:
    p = CountingPuller(nc, pool)
    await p.open()
    await nc.flush()
    try:
        yield p
    finally:
        await p.close()


async def _publish(js: JetStreamContext, pool: str, priority: str, body: bytes) -> None:
    await js.publish(subjects.task_run(pool, priority), body)


async def _idle_once(p: taskpull.PoolPuller) -> None:
    """One call that finds nothing and is halted while it waits: every priority was probed empty."""
    halt = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, halt.set)
    assert await asyncio.wait_for(p.next_message(halt), WAIT_CAP) is None


async def test_a_ring_is_answered_by_probing_its_own_priority_only(
    js: JetStreamContext, pool: str, puller: CountingPuller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskpull, "IDLE_WAIT_SECONDS", 3600.0)  # no periodic probe of all four meanwhile
    await _idle_once(puller)
    assert puller.probes[:4] == list(subjects.PRIORITIES)  # the first call knows nothing: all four
    puller.probes.clear()

    taking = asyncio.create_task(puller.next_message(asyncio.Event()))
    await asyncio.sleep(0.1)  # waiting on the doorbell
    await _publish(js, pool, "normal", b"n1")
    msg = await asyncio.wait_for(taking, WAIT_CAP)
    assert msg is not None and msg.data == b"n1"
    await msg.ack()
    # only the rung priority (a re-probe or two if the ring came before the stream offered the message)
    assert set(puller.probes) == {"normal"}, puller.probes


async def test_urgent_first_whatever_order_they_were_dispatched_in(
    js: JetStreamContext, pool: str, puller: CountingPuller
) -> None:
    await _idle_once(puller)
    for priority in ("low", "normal", "high", "urgent", "normal"):
        await _publish(js, pool, priority, priority.encode())
    await asyncio.sleep(0.2)  # every ring in
    got = []
    for _ in range(5):
        msg = await asyncio.wait_for(puller.next_message(asyncio.Event()), WAIT_CAP)
        assert msg is not None
        got.append(msg.data.decode())
        await msg.ack()
    assert got == ["urgent", "high", "normal", "normal", "low"]


async def test_a_redelivery_rings_nothing_and_is_still_taken_while_the_pool_keeps_ringing(
    nc: NatsClient,
    js: JetStreamContext,
    pool: str,
    puller: CountingPuller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(taskpull, "IDLE_WAIT_SECONDS", 0.5)
    # another worker takes the urgent task first...
    other = taskpull.PoolPuller(nc, pool)
    await other.open()
    try:
        await _publish(js, pool, "urgent", b"urgent")
        taken = await asyncio.wait_for(other.next_message(asyncio.Event()), WAIT_CAP)
        assert taken is not None and taken.data == b"urgent"
        # ...our puller then finds urgent empty (its ring is spent), and the other worker hands it back:
        # JetStream offers it again with no dispatch published, so no ring
        await _idle_once(puller)
        await taken.nak()
    finally:
        await other.close()

    # a busy pool: a normal dispatch rings before every take, so the puller never idles out
    for _ in range(100):
        await _publish(js, pool, "normal", b"normal")
        msg = await asyncio.wait_for(puller.next_message(asyncio.Event()), WAIT_CAP)
        assert msg is not None
        await msg.ack()
        if msg.data == b"urgent":
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the handed-back urgent task was never taken while normal tasks kept ringing")
