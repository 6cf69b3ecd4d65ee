"""CoalescingClient on the real (embedded) NATS server: commands queued over a few loop turns leave in one
write, in the order they were queued, and all arrive; `flush()`'s PING is written behind what was pending;
every connection the services make (`connect`, `make_broker`) is one. The nats-py methods it replaces are
pinned by their source, so an upgrade that changes them fails here instead of in production.

WAIT_CAP only stops a hang; no test asserts on speed."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from browserfleet_core import messaging
from browserfleet_core.messaging import (
    COALESCE_TURNS,
    BusCredentials,
    CoalescingClient,
    connect,
    make_broker,
)
from nats.aio.client import Client as NatsClient

WAIT_CAP = 30.0


class WriteSpy:
    """Everything the client hands its transport, call by call (`write` and `writelines` alike)."""

    def __init__(self, nc: NatsClient) -> None:
        transport: Any = nc._transport
        self.calls: list[bytes] = []
        write, writelines = transport.write, transport.writelines

        def spy_write(payload: bytes) -> None:
            self.calls.append(bytes(payload))
            write(payload)

        def spy_writelines(payload: list[bytes]) -> None:
            self.calls.append(b"".join(payload))
            writelines(payload)

        transport.write, transport.writelines = spy_write, spy_writelines

    @property
    def stream(self) -> bytes:
        return b"".join(self.calls)


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[CoalescingClient]:
    nc = await connect(nats_url, name="coalescing-test", credentials=BusCredentials())
    assert isinstance(nc, CoalescingClient)
    try:
        yield nc
    finally:
        await nc.close()


async def _received(sub: Any, n: int) -> list[bytes]:
    return [(await sub.next_msg(timeout=WAIT_CAP)).data for _ in range(n)]


async def test_messages_queued_over_a_few_turns_leave_in_one_write_in_order(
    client: CoalescingClient, nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messaging, "COALESCE_SECONDS", 3600.0)  # turns only (a loaded machine's are slow)
    subject = f"coalesce.{secrets.token_hex(4)}"
    sub = await nc.subscribe(subject)
    await nc.flush()
    await client.flush()
    spy = WriteSpy(client)

    async def publisher(name: str) -> None:
        # one message per loop turn: nats-py's own flusher writes after the first turn
        for i in range(COALESCE_TURNS - 1):
            await client.publish(subject, f"{name}-{i}".encode())
            await asyncio.sleep(0)

    await asyncio.gather(*(publisher(f"p{k}") for k in range(8)))
    got = await asyncio.wait_for(_received(sub, 8 * (COALESCE_TURNS - 1)), WAIT_CAP)

    assert len(spy.calls) == 1, spy.calls
    for k in range(8):  # each publisher's messages in its own order
        mine = [m for m in got if m.startswith(f"p{k}-".encode())]
        assert mine == [f"p{k}-{i}".encode() for i in range(COALESCE_TURNS - 1)]
    await sub.unsubscribe()


async def test_a_flush_gathers_no_longer_than_its_time_cap(
    client: CoalescingClient, nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a busy process a loop turn is long: once the command that woke the flusher has waited the cap, it
    is written with what joined it so far, without waiting more turns (all still arrive, in order)."""
    monkeypatch.setattr(messaging, "COALESCE_SECONDS", 0.0)  # every turn is past it
    subject = f"coalesce.{secrets.token_hex(4)}"
    sub = await nc.subscribe(subject)
    await nc.flush()
    await client.flush()
    spy = WriteSpy(client)
    for i in range(COALESCE_TURNS - 1):  # one message per turn: the old flusher wrote them in one write
        await client.publish(subject, f"m{i}".encode())
        await asyncio.sleep(0)
    got = await asyncio.wait_for(_received(sub, COALESCE_TURNS - 1), WAIT_CAP)
    assert got == [f"m{i}".encode() for i in range(COALESCE_TURNS - 1)]
    assert len(spy.calls) > 1, spy.calls
    await sub.unsubscribe()


async def test_a_lone_message_is_written_at_once(client: CoalescingClient, nc: NatsClient) -> None:
    subject = f"coalesce.{secrets.token_hex(4)}"
    sub = await nc.subscribe(subject)
    await nc.flush()
    await client.flush()
    spy = WriteSpy(client)
    await client.publish(subject, b"alone")
    for _ in range(3):  # a turn to notice nothing more came, one to write it
        await asyncio.sleep(0)
    assert spy.calls and b"alone" in spy.calls[0]
    assert (await sub.next_msg(timeout=WAIT_CAP)).data == b"alone"
    await sub.unsubscribe()


async def test_a_steady_stream_is_still_written_every_few_turns(client: CoalescingClient) -> None:
    """Commands that never stop coming do not hold the flush back for ever."""
    spy = WriteSpy(client)
    stop = asyncio.Event()

    async def chatter() -> None:
        while not stop.is_set():
            await client.publish("coalesce.chatter", b"x")
            await asyncio.sleep(0)

    task = asyncio.create_task(chatter())
    for _ in range(10 * COALESCE_TURNS):
        await asyncio.sleep(0)
    stop.set()
    await task
    assert len(spy.calls) >= 5


async def test_flush_writes_its_ping_behind_what_is_pending(client: CoalescingClient, nc: NatsClient) -> None:
    """What was published before flush() has reached the server once flush() returns (nats-py's own
    flush wrote its PING ahead of the pending PUB)."""
    subject = f"coalesce.{secrets.token_hex(4)}"
    sub = await nc.subscribe(subject)
    await nc.flush()
    await client.flush()
    spy = WriteSpy(client)
    await client.publish(subject, b"before the ping")
    await client.flush(
        timeout=int(WAIT_CAP)
    )  # called directly: wait_for's task would let the flusher go first
    stream = spy.stream
    assert stream.index(b"before the ping") < stream.index(b"PING\r\n"), spy.calls
    assert (await sub.next_msg(timeout=WAIT_CAP)).data == b"before the ping"
    await sub.unsubscribe()


async def test_requests_and_replies_on_coalescing_clients(client: CoalescingClient, nats_url: str) -> None:
    other = await connect(nats_url, name="coalescing-responder", credentials=BusCredentials())
    try:
        subject = f"coalesce.{secrets.token_hex(4)}"

        async def respond(msg: Any) -> None:
            await msg.respond(msg.data.upper())

        await other.subscribe(subject, cb=respond)
        await other.flush()
        replies = await asyncio.wait_for(
            asyncio.gather(*(client.request(subject, f"r{i}".encode(), timeout=10) for i in range(200))),
            WAIT_CAP,
        )
        assert [r.data for r in replies] == [f"R{i}".encode() for i in range(200)]
    finally:
        await other.close()


async def test_a_brokers_connection_coalesces(nats_url: str) -> None:
    broker = make_broker(nats_url, name="coalescing-test", credentials=BusCredentials())
    await broker.start()
    try:
        assert isinstance(broker.connection, CoalescingClient)
    finally:
        await broker.stop()


# The nats-py methods CoalescingClient replaces, as they were when it was written (nats-py 2.16.0). If one
# changed, read the new version and bring CoalescingClient's copy in line before updating the digest.
PINNED = {
    "_flusher": "43957ffb357d6d94",
    "_send_ping": "d57b2f820443afb4",
}


@pytest.mark.parametrize("method", sorted(PINNED))
def test_the_replaced_nats_py_methods_are_those_it_was_written_against(method: str) -> None:
    source = inspect.getsource(getattr(NatsClient, method))
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == PINNED[method], (
        f"nats-py's Client.{method} changed: check CoalescingClient against it"
    )


def test_what_it_relies_on_is_still_there() -> None:
    nc = NatsClient()
    for attribute in ("_pending", "_pending_data_size", "_flush_queue", "_pongs", "_transport"):
        assert hasattr(nc, attribute), attribute
    for method in ("_send_command", "_flush_pending", "_error_cb", "_process_op_err"):
        assert callable(getattr(nc, method)), method


async def test_it_carries_on_across_a_server_restart(tmp_path: Any) -> None:
    """nats-py cancels the flusher when the connection drops and starts a new one (ours) on reconnect: what
    was published while the server was away is written then, and requests and flush() work again."""
    from browserfleet_devkit.embedded import free_port, launch_nats_server, wait_listening
    from browserfleet_devkit.processes import stop_process

    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(f'listen: "127.0.0.1:{port}"\n')
    url = f"nats://127.0.0.1:{port}"

    def start() -> Any:
        proc = launch_nats_server(config, tmp_path / "nats.log")
        wait_listening(proc, port)
        return proc

    proc = await asyncio.to_thread(start)
    back = {"client": asyncio.Event(), "responder": asyncio.Event()}

    def on_reconnect(name: str) -> Any:
        async def reconnected() -> None:
            back[name].set()

        return reconnected

    client, responder = [
        await connect(
            url,
            name=f"coalescing-{name}",
            credentials=BusCredentials(),
            reconnect_time_wait=0.1,
            reconnected_cb=on_reconnect(name),
        )
        for name in back
    ]
    try:

        async def respond(msg: Any) -> None:
            await msg.respond(msg.data)

        await responder.subscribe("restart.echo", cb=respond)
        sink = await responder.subscribe("restart.sink")
        await responder.flush()
        assert (await client.request("restart.echo", b"one", timeout=10)).data == b"one"

        await asyncio.to_thread(stop_process, proc, 10)
        for _ in range(200):  # until the client has seen the server go
            if not client.is_connected:
                break
            await asyncio.sleep(0.05)
        await client.publish("restart.sink", b"while away")  # buffered for the next connection
        proc = await asyncio.to_thread(start)
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in back.values())), WAIT_CAP)
        await responder.flush()
        assert (await client.request("restart.echo", b"two", timeout=10)).data == b"two"
        await client.flush(timeout=10)
        # the buffered publish went out on reconnect; the sink's SUB was re-sent by the responder's reconnect,
        # which may have come after it, so only what is sent now is certain to arrive
        await client.publish("restart.sink", b"after")
        await client.flush(timeout=10)
        got = [(await sink.next_msg(timeout=WAIT_CAP)).data]
        while got[-1] != b"after":
            got.append((await sink.next_msg(timeout=WAIT_CAP)).data)
        assert got[-1] == b"after"
    finally:
        await client.close()
        await responder.close()
        await asyncio.to_thread(stop_process, proc, 10)
