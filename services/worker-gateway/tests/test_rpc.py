"""Worker-gateway's subjects over the real NATS server and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.common import Ack, Actor
from browserfleet_contracts.workers import (
    CreateInviteRequest,
    Heartbeat,
    InvitePublic,
    ListWorkersRequest,
    RegisterReply,
    RegisterRequest,
    WorkerAuthRequest,
    WorkerIdentity,
    WorkerPublic,
)
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_core.testing import unique_name
from browserfleet_worker_gateway.app import WorkerGatewayContext, create_context
from browserfleet_worker_gateway.settings import WorkerGatewaySettings


@pytest.fixture(scope="module")
async def gateway(
    wg_settings: WorkerGatewaySettings, wg_migrated: str
) -> AsyncIterator[WorkerGatewayContext]:
    ctx = create_context(wg_settings)
    await ctx.broker.start()
    # its SUBs went out on its own connection: a PING round trip makes sure the server has them
    await ctx.broker.connection.flush()
    yield ctx
    await ctx.broker.stop()
    await ctx.db.dispose()


@pytest.fixture(scope="module")
async def rpc(nats_url: str, gateway: WorkerGatewayContext) -> AsyncIterator[RpcClient]:
    nc = await nats.connect(nats_url)
    yield RpcClient(nc, timeout=5)
    await nc.drain()


async def test_invite_register_heartbeat_list_over_nats(rpc: RpcClient) -> None:
    actor = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    invite = await rpc.call(subjects.Workers.CREATE_INVITE, CreateInviteRequest(actor=actor), InvitePublic)
    reg = RegisterRequest(invite_code=invite.code, name="remote-1", version="1.0")
    reply = await rpc.call(subjects.Workers.REGISTER, reg, RegisterReply)
    with pytest.raises(ServiceError) as exc:
        await rpc.call(subjects.Workers.REGISTER, reg, RegisterReply)
    assert exc.value.status == 401 and exc.value.field == "invite_code"

    ack = await rpc.call(
        subjects.Workers.HEARTBEAT, Heartbeat(worker_key=reply.worker_key, busy=True, running_tasks=1), Ack
    )
    assert ack.ok
    workers = await rpc.call(subjects.Workers.LIST, ListWorkersRequest(actor=actor), list[WorkerPublic])
    assert [(w.id, w.state) for w in workers if w.org_id == actor.org_id] == [(reply.worker_id, "busy")]
    identity = await rpc.call(
        subjects.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=reply.worker_key), WorkerIdentity
    )
    assert identity.worker_id == reply.worker_id


async def test_errors_over_nats(rpc: RpcClient) -> None:
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            subjects.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key="sk_worker_x"), WorkerIdentity
        )
    assert exc.value.status == 401
    viewer = Actor(org_id="o", role="viewer")
    with pytest.raises(ServiceError) as exc:
        await rpc.call(subjects.Workers.CREATE_INVITE, CreateInviteRequest(actor=viewer), InvitePublic)
    assert exc.value.status == 403
    with pytest.raises(ServiceError) as exc:
        await rpc.call(subjects.Workers.CREATE_INVITE, {"invite": {"ttl_seconds": 1}}, InvitePublic)
    assert exc.value.status == 422 and exc.value.field == "invite.ttl_seconds"
