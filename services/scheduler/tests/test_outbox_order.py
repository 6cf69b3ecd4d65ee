"""A one-statement write's event (`OutboxRelay.committed`) is on the connection before the writer's answer:
the answer does not wait for JetStream's ack, and still cannot overtake the event it follows."""

from __future__ import annotations

from browserfleet_core.db import Database
from browserfleet_core.outbox import OutboxRelay
from browserfleet_devkit.testing import unique_name
from browserfleet_scheduler.models import outbox
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from .conftest import eventually

ROUNDS = 20


async def test_the_event_leaves_before_the_answer_that_follows_it(
    service_db: Database, nc: NatsClient, js: JetStreamContext
) -> None:
    prefix = unique_name("order")
    stream = prefix.upper()
    await js.add_stream(name=stream, subjects=[f"{prefix}.event.>"])
    seen: list[str] = []

    async def arrived(msg: Msg) -> None:
        seen.append(msg.subject)

    sub = await nc.subscribe(f"{prefix}.>", cb=arrived)
    relay = OutboxRelay(service_db, outbox, poll_seconds=3600, publish_on_commit=True)
    relay.start(js)
    try:
        for i in range(ROUNDS):
            # ids no outbox row has: marking them published later touches nothing
            await relay.committed([(10**12 + i, f"{prefix}.event.{i}", b"{}", unique_name("msg"))])
            await nc.publish(
                f"{prefix}.answer.{i}", b""
            )  # what the writer sends next, on the same connection

        async def all_arrived() -> bool:
            return len(seen) == 2 * ROUNDS

        await eventually(all_arrived, "every event and answer")
        assert seen == [s for i in range(ROUNDS) for s in (f"{prefix}.event.{i}", f"{prefix}.answer.{i}")]
    finally:
        await relay.stop()  # waits for the acks still on their way
        await sub.unsubscribe()
    assert (await js.stream_info(stream)).state.messages == ROUNDS  # each event stored, none twice
    await js.delete_stream(stream)
