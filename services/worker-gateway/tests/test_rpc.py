"""Worker-gateway as `run` wires it (rpc subjects, outbox relay, offline sweep, the configured pool invite) over
the real NATS server and PostgreSQL: what reaches the bus after each commit (worker.* on EVENTS, the
`workers.revoked` broadcast, the drain request) and the errors callers get."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Actor, ById
from browserfleet_contracts.events import EventEnvelope
from browserfleet_contracts.workers import (
    CreateInviteRequest,
    DeregisterRequest,
    Heartbeat,
    InviteCreate,
    ListWorkersRequest,
    PoolsRequest,
    RegisterReply,
    RegisterRequest,
    WorkerAuthRequest,
    WorkerRevoked,
    WorkerStatusRequest,
)
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.polling import eventually
from browserfleet_devkit.testing import unique_name
from browserfleet_worker_gateway import app
from browserfleet_worker_gateway.runtime import WorkerGatewayRuntime
from browserfleet_worker_gateway.settings import WorkerGatewaySettings
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from pydantic import BaseModel

WAIT_CAP = 30.0  # hang protection only
CONFIGURED = "inv_" + "c" * 43


@pytest.fixture(scope="module")
async def gateway(nats_url: str, migrated: str) -> AsyncIterator[WorkerGatewayRuntime]:
    settings = WorkerGatewaySettings(
        nats_url=nats_url,
        database_url=migrated,
        # short, so the test sees a silent worker announced without waiting long
        offline_after_seconds=1.0,
        offline_check_seconds=0.2,
        outbox_poll_seconds=0.2,
        platform_pool_invite=CONFIGURED,
    )
    async with app.serving(settings) as rt:
        yield rt


@pytest.fixture(scope="module")
def rpc(nc: NatsClient) -> RpcClient:
    return RpcClient(nc, timeout=5)


async def _next(queue: asyncio.Queue[Msg]) -> Msg:
    return await asyncio.wait_for(queue.get(), WAIT_CAP)


async def _listen(nc: NatsClient, subject: str) -> asyncio.Queue[Msg]:
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def put(msg: Msg) -> None:
        await queue.put(msg)

    await nc.subscribe(subject, cb=put)
    await nc.flush()
    return queue


async def test_invite_register_heartbeat_list_over_nats(rpc: RpcClient) -> None:
    actor = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    invite = await rpc.call(endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=actor))
    reg = RegisterRequest(invite_code=invite.code, name="remote-1", version="1.0")
    reply = await rpc.call(endpoints.Workers.REGISTER, reg)
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Workers.REGISTER, reg)
    assert exc.value.status == 401 and exc.value.field == "invite_code"

    beat = await rpc.call(
        endpoints.Workers.HEARTBEAT, Heartbeat(worker_key=reply.worker_key, busy=True, running_tasks=1)
    )
    assert beat.ok and not beat.drain
    workers = await rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=actor))
    assert [(w.id, w.status) for w in workers if w.org_id == actor.org_id] == [(reply.worker_id, "busy")]
    identity = await rpc.call(endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=reply.worker_key))
    assert identity.worker_id == reply.worker_id


async def test_a_registration_whose_reply_was_lost_is_answered_again(rpc: RpcClient, nc: NatsClient) -> None:
    """The worker's flow when the reply comes too late: the registration committed, the worker gave up
    waiting (`Unavailable`) and sends the same request again; it gets the worker that was made."""
    actor = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    invite = await rpc.call(endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=actor))
    reg = RegisterRequest(invite_code=invite.code, name="laptop", public_key="A" * 43)
    inbox = nc.new_inbox()  # where the first reply goes: the worker no longer waits for it
    late = await _listen(nc, inbox)
    headers = {"content-type": "application/json"}
    await nc.publish(
        endpoints.Workers.REGISTER.subject, reg.model_dump_json().encode(), reply=inbox, headers=headers
    )
    lost = RegisterReply.model_validate_json((await _next(late)).data)

    again = await rpc.call(endpoints.Workers.REGISTER, reg)
    assert again == lost
    beat = await rpc.call(endpoints.Workers.HEARTBEAT, Heartbeat(worker_key=again.worker_key))
    assert beat.ok
    workers = await rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=actor))
    assert [(w.id, w.status) for w in workers if w.org_id == actor.org_id] == [(lost.worker_id, "online")]

    # another key pair with the used code is another worker: refused
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Workers.REGISTER, reg.model_copy(update={"public_key": "B" * 43}))
    assert exc.value.status == 401 and "already used" in exc.value.message


async def test_the_configured_pool_invite_registers_replicas_with_their_own_ids(
    rpc: RpcClient, nc: NatsClient
) -> None:
    one = await rpc.call(endpoints.Workers.REGISTER, RegisterRequest(invite_code=CONFIGURED, name="pod-1"))
    two = await rpc.call(endpoints.Workers.REGISTER, RegisterRequest(invite_code=CONFIGURED, name="pod-2"))
    assert one.worker_id != two.worker_id and one.pool == two.pool == "default" and one.org_id is None
    # registration made the pool's consumers: a worker needs no right to create them
    info = await nc.jetstream().consumer_info(
        subjects.TASKS_STREAM, subjects.task_run_consumer("default", "urgent")
    )
    assert info.config.filter_subject == subjects.task_run("default", "urgent")
    pools = {p.key: p for p in await rpc.call(endpoints.Workers.POOLS, PoolsRequest())}
    assert pools["default"].workers >= 2 and pools["default"].org_id is None


async def test_a_silent_worker_is_announced_offline_on_events(rpc: RpcClient, nc: NatsClient) -> None:
    actor = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    events = await _listen(nc, subjects.event(actor.org_id, "worker.*"))
    invite = await rpc.call(endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=actor))
    reply = await rpc.call(endpoints.Workers.REGISTER, RegisterRequest(invite_code=invite.code, name="quiet"))
    await rpc.call(endpoints.Workers.HEARTBEAT, Heartbeat(worker_key=reply.worker_key))
    online = EventEnvelope.model_validate_json((await _next(events)).data)
    assert (online.type, online.data["worker_id"]) == ("worker.online", reply.worker_id)
    # no more heartbeats: the sweep notices. Events are at least once: a relay that published `worker.online`
    # and did not see JetStream's ack publishes it again, and a plain subscriber sees both.
    offline = await _next(events)
    while EventEnvelope.model_validate_json(offline.data).id == online.id:
        offline = await _next(events)
    envelope = EventEnvelope.model_validate_json(offline.data)
    assert envelope.type == "worker.offline" and offline.headers == {"Nats-Msg-Id": envelope.id}
    assert {"worker_id", "worker_name", "last_seen"} <= set(envelope.data)
    assert (envelope.data["worker_id"], envelope.data["worker_name"]) == (reply.worker_id, "quiet")
    listed = await rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=actor))
    assert [w.status for w in listed if w.id == reply.worker_id] == ["offline"]


def workers_online() -> float | None:
    return REGISTRY.get_sample_value("browserfleet_workers_online")


async def online_becomes(count: int) -> None:
    async def probe() -> bool:
        return workers_online() == count

    await eventually(probe, f"browserfleet_workers_online to read {count}", WAIT_CAP)


async def test_workers_online_counts_the_workers_heartbeating(rpc: RpcClient) -> None:
    """The gauge counts the fleet's workers with a live heartbeat: up when one beats, down when one says
    it stops and when one falls silent. Every replica counts the whole fleet (the database)."""
    # the module's earlier workers fell silent, so after `offline_after_seconds` none is live
    await online_becomes(0)
    actor = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    made = await rpc.call(
        endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=actor, invite=InviteCreate(multi_use=True))
    )
    a, b = [
        await rpc.call(endpoints.Workers.REGISTER, RegisterRequest(invite_code=made.code, name=n))
        for n in "ab"
    ]
    live = {a.worker_key}
    turn = asyncio.Lock()  # a pass of beats is never under way when a worker leaves `live`

    async def beat() -> None:
        while live:
            async with turn:
                for key in list(live):
                    await rpc.call(endpoints.Workers.HEARTBEAT, Heartbeat(worker_key=key))
            await asyncio.sleep(0.2)

    beats = asyncio.create_task(beat())
    try:
        await online_becomes(1)
        live.add(b.worker_key)
        await online_becomes(2)
        async with turn:  # a clean stop: offline at once, while b keeps beating
            live.discard(a.worker_key)
            stop = WorkerStatusRequest(worker_key=a.worker_key, worker_id=a.worker_id, status="offline")
            await rpc.call(endpoints.Workers.STATUS, stop)
        await online_becomes(1)
    finally:
        live.clear()
        await beats
    await online_becomes(0)  # b fell silent


async def test_revoke_and_deregister_are_broadcast_and_drain_is_asked(rpc: RpcClient, nc: NatsClient) -> None:
    actor = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    made = await rpc.call(
        endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=actor, invite=InviteCreate(multi_use=True))
    )
    a, b, c = [
        await rpc.call(endpoints.Workers.REGISTER, RegisterRequest(invite_code=made.code, name=n))
        for n in "abc"
    ]
    revoked = await _listen(nc, subjects.WORKER_REVOKED)
    drains = await _listen(nc, subjects.worker_drain(b.worker_id))
    events = await _listen(nc, subjects.event(actor.org_id, "worker.*"))

    await rpc.call(endpoints.Workers.REVOKE, ById(actor=actor, id=a.worker_id))
    assert WorkerRevoked.model_validate_json((await _next(revoked)).data).worker_id == a.worker_id
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=a.worker_key))
    assert (exc.value.status, exc.value.code) == (401, "worker_revoked")
    assert json.loads((await _next(events)).data)["type"] == "worker.revoked"

    shown = await rpc.call(endpoints.Workers.DRAIN, ById(actor=actor, id=b.worker_id))
    assert shown.status in ("draining", "offline")
    await _next(drains)
    assert (await rpc.call(endpoints.Workers.HEARTBEAT, Heartbeat(worker_key=b.worker_key))).drain

    await rpc.call(
        endpoints.Workers.DEREGISTER, DeregisterRequest(worker_key=c.worker_key, worker_id=c.worker_id)
    )
    assert WorkerRevoked.model_validate_json((await _next(revoked)).data).worker_id == c.worker_id


async def test_errors_over_nats(rpc: RpcClient) -> None:
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key="sk_worker_x"))
    assert exc.value.status == 401
    viewer = Actor(org_id="o", role="viewer")
    calls: list[tuple[endpoints.Endpoint[Any, Any], BaseModel]] = [
        (endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=viewer)),
        (endpoints.Workers.DRAIN, ById(actor=viewer, id="w")),
        (endpoints.Workers.REVOKE, ById(actor=viewer, id="w")),
    ]
    for endpoint, body in calls:
        with pytest.raises(ServiceError) as exc:
            await rpc.call(endpoint, body)
        assert exc.value.status == 403, endpoint
    for raw, field in (
        ({"invite": {"ttl_seconds": 1}}, "invite.ttl_seconds"),
        ({"invite": {"pool": "Not_A_Pool"}}, "invite.pool"),
        ({"invite": {"max_uses": 3}}, "invite"),
    ):
        with pytest.raises(ServiceError) as exc:
            await rpc.call_raw(endpoints.Workers.CREATE_INVITE, raw)
        assert (exc.value.status, exc.value.field) == (422, field), raw
    with pytest.raises(ServiceError) as exc:
        await rpc.call_raw(endpoints.Workers.REGISTER, {"invite_code": "inv_x", "public_key": "not-a-key"})
    assert (exc.value.status, exc.value.field) == (422, "public_key")
    admin = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    invite = await rpc.call(endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=admin))
    mine = await rpc.call(endpoints.Workers.REGISTER, RegisterRequest(invite_code=invite.code, name="m"))
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            endpoints.Workers.STATUS,
            WorkerStatusRequest(worker_key=mine.worker_key, worker_id="someone-else", status="error"),
        )
    assert exc.value.status == 404
