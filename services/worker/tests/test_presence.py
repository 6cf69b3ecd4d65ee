"""The worker's identity against the REAL worker-gateway (in-process, real NATS and PostgreSQL): a pool invite
gives each replica an identity of its own with its own X25519 public key, a saved identity sends a new key
at every start, a clean shutdown deregisters a replica (and only says "offline" for a saved identity), and
the heartbeat's reply drains the worker or, once the worker was removed, stops it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor, ById
from browserfleet_contracts.workers import (
    CreateInviteRequest,
    InviteCreate,
    ListWorkersRequest,
    WorkerAuthRequest,
)
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_core.migrations import upgrade
from browserfleet_devkit.testing import unique_name
from browserfleet_worker.presence import Identity, heartbeat_loop, leave, new_key_pair, obtain_identity
from browserfleet_worker.settings import WorkerSettings
from browserfleet_worker_gateway import app as worker_gateway
from browserfleet_worker_gateway.runtime import WorkerGatewayRuntime
from browserfleet_worker_gateway.settings import WorkerGatewaySettings
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from nats.aio.client import Client as NatsClient

WAIT_CAP = 30.0  # hang protection only


@pytest.fixture(scope="module")
async def wg(nats_url: str, database_url: str) -> AsyncIterator[WorkerGatewayRuntime]:
    upgrade("browserfleet_worker_gateway", database_url)
    async with worker_gateway.serving(
        WorkerGatewaySettings(nats_url=nats_url, database_url=database_url)
    ) as rt:
        yield rt


@pytest.fixture(scope="module")
async def nc(nats_url: str, wg: WorkerGatewayRuntime) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


def public_half(identity: Identity) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    assert identity.private_key is not None
    raw = identity.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _invite(rpc: RpcClient, admin: Actor, **body: object) -> str:
    made = await rpc.call(
        endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=admin, invite=InviteCreate(**body))
    )
    return made.code


def test_a_key_pair_is_x25519() -> None:
    private, public = new_key_pair()
    peer, peer_public = new_key_pair()
    raw = base64.urlsafe_b64decode(public + "=")
    # both sides reach the same secret: what sealing to this public key relies on
    assert peer.exchange(X25519PublicKey.from_public_bytes(raw)) == private.exchange(peer.public_key())
    assert len(raw) == 32 and public != peer_public


async def test_replicas_of_one_pool_invite_are_workers_of_their_own(nc: NatsClient, nats_url: str) -> None:
    rpc = RpcClient(nc, timeout=5)
    admin = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    code = await _invite(rpc, admin, pool="pods", multi_use=True)
    settings = WorkerSettings(nats_url=nats_url, worker_invite_code=code, worker_name="pod")
    one, two = [await obtain_identity(settings, rpc, asyncio.Event()) for _ in range(2)]
    assert one.worker_id != two.worker_id and one.worker_key != two.worker_key
    assert one.ephemeral and two.ephemeral and one.pool == two.pool == f"pods_{admin.org_id}"
    for identity in (one, two):
        who = await rpc.call(
            endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=identity.worker_key)
        )
        assert who.public_key == public_half(identity), "each registered its own public key"
    listed = await rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=admin))
    mine = [w for w in listed if w.org_id == admin.org_id]
    assert len(mine) == 2 and all(w.device_info and w.device_info.hostname for w in mine)

    await leave(rpc, one)  # a replica's clean shutdown removes its identity
    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=one.worker_key))
    assert exc.value.status == 401
    listed = await rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=admin))
    assert [w.id for w in listed if w.org_id == admin.org_id] == [two.worker_id]


async def test_a_saved_identity_sends_a_new_public_key_at_every_start(
    nc: NatsClient, nats_url: str, tmp_path: Path
) -> None:
    rpc = RpcClient(nc, timeout=5)
    admin = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    code = await _invite(rpc, admin, name="laptop")
    settings = WorkerSettings(nats_url=nats_url, worker_invite_code=code, worker_state_dir=tmp_path)
    first = await obtain_identity(settings, rpc, asyncio.Event())
    assert not first.ephemeral and "private" not in (tmp_path / "worker.json").read_text()
    again = await obtain_identity(settings, rpc, asyncio.Event())  # a restart: the saved key, no invite used
    assert (again.worker_id, again.worker_key, again.pool) == (first.worker_id, first.worker_key, first.pool)
    who = await rpc.call(endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=again.worker_key))
    assert who.public_key == public_half(again) != public_half(first), "rotated at the restart"
    await leave(rpc, again)  # a saved identity stays registered; it is offline now
    listed = await rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=admin))
    assert [(w.id, w.status) for w in listed if w.org_id == admin.org_id] == [(again.worker_id, "offline")]


async def test_the_heartbeat_drains_and_a_removed_worker_stops(nc: NatsClient, nats_url: str) -> None:
    rpc = RpcClient(nc, timeout=5)
    admin = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    code = await _invite(rpc, admin)
    settings = WorkerSettings(nats_url=nats_url, worker_invite_code=code, heartbeat_seconds=0.2)
    identity = await obtain_identity(settings, rpc, asyncio.Event())
    assert identity.worker_id
    drained, removed, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(
        heartbeat_loop(rpc, identity, settings, lambda: 0, stop, on_drain=drained.set, on_removed=removed.set)
    )
    try:
        await rpc.call(endpoints.Workers.DRAIN, ById(actor=admin, id=identity.worker_id))
        await asyncio.wait_for(drained.wait(), WAIT_CAP)
        await rpc.call(endpoints.Workers.REVOKE, ById(actor=admin, id=identity.worker_id))
        await asyncio.wait_for(removed.wait(), WAIT_CAP)
        await asyncio.wait_for(loop, WAIT_CAP)  # the loop ends itself once the key is refused
    finally:
        stop.set()
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
