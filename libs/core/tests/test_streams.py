"""Stream replicas and storage from the settings, on real NATS: a three-server JetStream cluster on this
machine (`browserfleet_devkit.natscluster`, as Kubernetes runs it) and a single server (as `make dev` and
Compose run it).

The cluster tests show what the replicas are for: an R3 stream keeps every acknowledged message and goes on
taking new ones after the server leading it is killed, and an existing R1 stream is raised to R3 in place.
On one server, asking for 3 replicas stops the service with the setting named, and a storage type an
existing stream cannot change to leaves the stream as it is, with a warning."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from browserfleet_contracts import subjects
from browserfleet_core.settings import StreamSettings
from browserfleet_core.streams import (
    ARTIFACTS_STREAM,
    StreamConfigError,
    ensure_key_value,
    ensure_streams,
)
from browserfleet_devkit.embedded import EmbeddedNats
from browserfleet_devkit.natscluster import NatsCluster
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, StorageType
from nats.js.errors import APIError, NoStreamResponseError

STREAMS = (subjects.TASKS_STREAM, subjects.TASK_UPDATES_STREAM, subjects.EVENTS_STREAM, ARTIFACTS_STREAM)
WAIT_CAP = 60.0  # only stops a hang: a re-election takes a few seconds


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture(scope="module")
async def nc(cluster: NatsCluster) -> AsyncIterator[NatsClient]:
    client = await nats.connect(servers=cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield client
    finally:
        await client.close()


async def wait_current(js: JetStreamContext, stream: str) -> None:
    """Until every peer of the stream has caught up with its leader: a stream whose replicas were just
    raised survives the loss of a server only from then on."""
    for _ in range(600):
        info = await js.stream_info(stream)
        peers = info.cluster.replicas if info.cluster else None
        if peers and all(p.current for p in peers):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the peers of {stream} never caught up: {info.cluster}")


async def replicas(js: JetStreamContext, stream: str) -> tuple[int, int]:
    """The configured replica count, and how many servers hold the stream (the leader and its peers)."""
    info = await js.stream_info(stream)
    peers = len(info.cluster.replicas or []) if info.cluster else 0
    return info.config.num_replicas or 1, 1 + peers


async def test_replicas_come_from_the_settings_and_existing_streams_are_raised(nc: NatsClient) -> None:
    js = nc.jetstream()
    await ensure_streams(js, settings=StreamSettings())
    assert {s: await replicas(js, s) for s in STREAMS} == {s: (1, 1) for s in STREAMS}

    three = StreamSettings(stream_replicas=3, stream_replicas_task_updates=1)
    await ensure_streams(js, settings=three)
    for stream in (subjects.TASKS_STREAM, subjects.EVENTS_STREAM, ARTIFACTS_STREAM):
        for _ in range(200):  # the new peers catch up asynchronously; poll, never time
            if await replicas(js, stream) == (3, 3):
                break
            await asyncio.sleep(0.05)
        assert await replicas(js, stream) == (3, 3), stream
    assert await replicas(js, subjects.TASK_UPDATES_STREAM) == (1, 1)  # its own override
    # the artifacts bucket keeps its retention when only its replicas change
    assert (await js.stream_info(ARTIFACTS_STREAM)).config.max_age == pytest.approx(7 * 86_400.0)

    await ensure_key_value(
        js, KeyValueConfig(bucket="bf_test_kv", storage=StorageType.MEMORY), settings=three
    )
    assert (await replicas(js, "KV_bf_test_kv"))[0] == 3


async def test_an_r3_stream_keeps_every_acknowledged_message_when_its_leader_dies(
    cluster: NatsCluster, nc: NatsClient
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, settings=StreamSettings(stream_replicas=3))
    subject = subjects.task_run("replication-test", "normal")
    await wait_current(js, subjects.TASKS_STREAM)
    info = await js.stream_info(subjects.TASKS_STREAM)
    assert info.cluster is not None and info.cluster.leader is not None
    leader = int(info.cluster.leader.rsplit("-", 1)[1])

    # the consumer exists before the failure, as the workers' pool consumers do (it is replicated too)
    sub = await js.pull_subscribe(
        subject,
        durable="replication-test",
        stream=subjects.TASKS_STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )
    sent = [f"before-{i}".encode() for i in range(50)]
    for payload in sent:
        await js.publish(subject, payload, stream=subjects.TASKS_STREAM)
    cluster.stop_node(leader, kill=True)
    try:
        for i in range(50):
            payload = f"after-{i}".encode()
            await _publish_until_acked(js, subject, payload)
            sent.append(payload)
        got = await _drain(sub, len(sent))
    finally:
        cluster.start_node(leader)
        cluster.wait_ready()
    assert got == sent


async def _publish_until_acked(js: JetStreamContext, subject: str, payload: bytes) -> None:
    """Publishes during the re-election may go unanswered: the client retries, as a service's would. The
    message id makes a retry of a publish that was stored after all a duplicate JetStream drops."""
    deadline = asyncio.get_running_loop().time() + WAIT_CAP
    while True:
        try:
            await js.publish(
                subject,
                payload,
                stream=subjects.TASKS_STREAM,
                timeout=1,
                headers={"Nats-Msg-Id": payload.decode()},
            )
            return
        except (NatsTimeout, NoRespondersError, NoStreamResponseError, APIError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _drain(sub: JetStreamContext.PullSubscription, count: int) -> list[bytes]:
    got: list[bytes] = []
    deadline = asyncio.get_running_loop().time() + WAIT_CAP
    while len(got) < count and asyncio.get_running_loop().time() < deadline:
        try:
            msgs = await sub.fetch(count - len(got), timeout=1)
        except (NatsTimeout, APIError):
            continue
        for msg in msgs:
            got.append(msg.data)
            await msg.ack_sync()
    await sub.unsubscribe()
    return got


@pytest.fixture(scope="module")
async def single(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsClient]:
    server = EmbeddedNats(Path(tmp_path_factory.mktemp("single")) / "nats")
    server.start()
    client = await nats.connect(server.url)
    try:
        yield client
    finally:
        await client.close()
        server.stop()


async def test_one_server_refuses_three_replicas_naming_the_setting(single: NatsClient) -> None:
    with pytest.raises(StreamConfigError, match="STREAM_REPLICAS_TASKS / STREAM_REPLICAS"):
        await ensure_streams(single.jetstream(), settings=StreamSettings(stream_replicas=3))


async def test_per_stream_storage_and_an_existing_stream_keeps_its_own(
    single: NatsClient, caplog: pytest.LogCaptureFixture
) -> None:
    js = single.jetstream()
    for name in STREAMS:  # fresh streams: the previous test may have left some behind
        with contextlib.suppress(APIError):
            await js.delete_stream(name)
    await ensure_streams(js, settings=StreamSettings(stream_storage_events="memory"))
    storage = {s: (await js.stream_info(s)).config.storage for s in STREAMS}
    assert [StorageType(storage[s]) for s in STREAMS] == [
        StorageType.FILE,
        StorageType.FILE,
        StorageType.MEMORY,
        StorageType.FILE,
    ]
    with caplog.at_level(logging.WARNING, logger="browserfleet_core.streams"):
        await ensure_streams(js, settings=StreamSettings())
    assert StorageType((await js.stream_info(subjects.EVENTS_STREAM)).config.storage) == StorageType.MEMORY
    assert "stream EVENTS is kept in memory storage" in caplog.text


async def test_a_cluster_without_its_meta_leader_yet_is_waited_for_not_exited_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """All pods start at once: a service may ask a cluster whose servers are not all up (no meta leader,
    so JetStream answers 503 or not at all). It asks again until they are, instead of exiting."""
    cluster = NatsCluster(tmp_path / "nats")
    try:
        cluster.start_node(0)  # one of three: no quorum, no meta leader
        client = await nats.connect(servers=cluster.urls[:1], max_reconnect_attempts=-1)
        try:
            js = client.jetstream(timeout=1.0)
            caplog.set_level(logging.WARNING, logger="browserfleet_core.streams")
            declared = asyncio.create_task(ensure_streams(js, settings=StreamSettings(stream_replicas=3)))
            await asyncio.sleep(2.5)
            assert not declared.done(), "the streams were declared without a meta leader"
            for i in (1, 2):
                cluster.start_node(i)
            await asyncio.wait_for(declared, WAIT_CAP)
            for stream in STREAMS:
                assert await replicas(js, stream) == (3, 3), stream
            assert "JetStream cannot declare the streams yet" in caplog.text
        finally:
            await client.close()
    finally:
        cluster.stop()


async def test_too_few_servers_for_the_replicas_yet_is_waited_for(tmp_path: Path) -> None:
    """Two servers of three up: a leader, but no third peer for a stream's third replica ('no suitable peers
    for placement'), as while the last pod starts. Asked again until it is up, instead of exiting."""
    cluster = NatsCluster(tmp_path / "nats")
    try:
        for i in (0, 1):
            cluster.start_node(i)
        cluster.wait_ready()
        client = await nats.connect(servers=cluster.urls[:2], max_reconnect_attempts=-1)
        try:
            js = client.jetstream()
            declared = asyncio.create_task(ensure_streams(js, settings=StreamSettings(stream_replicas=3)))
            await asyncio.sleep(2.0)
            assert not declared.done(), declared
            cluster.start_node(2)
            await asyncio.wait_for(declared, WAIT_CAP)
            for stream in STREAMS:
                assert await replicas(js, stream) == (3, 3), stream
        finally:
            await client.close()
    finally:
        cluster.stop()


async def test_jetstream_that_never_answers_fails_after_the_wait_naming_it(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "nats")
    try:
        cluster.start_node(0)
        client = await nats.connect(servers=cluster.urls[:1])
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises((NatsTimeout, NoRespondersError, APIError)):
                await ensure_streams(client.jetstream(timeout=0.5), within=2.0)
            assert asyncio.get_running_loop().time() - started < WAIT_CAP
        finally:
            await client.close()
    finally:
        cluster.stop()
