"""Organization deletion: worker-gateway consumes `organization.deleted` from EVENTS (real NATS, real
PostgreSQL) and removes that org's workers and invites, once; other orgs and platform-wide workers stay."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.workers import (
    CreateInviteRequest,
    ListWorkersRequest,
    RegisterReply,
    RegisterRequest,
    WorkerAuthRequest,
)
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_core.org_events import durable_name
from browserfleet_devkit.testing import publish_org_deleted_twice, unique_name, wait_consumed
from browserfleet_worker_gateway.app import serving
from browserfleet_worker_gateway.models import Worker, WorkerInvite, WorkersBase
from browserfleet_worker_gateway.repository import NOT_ORG_SCOPED, purge_org
from browserfleet_worker_gateway.runtime import WorkerGatewayRuntime
from browserfleet_worker_gateway.settings import WorkerGatewaySettings
from nats.aio.client import Client as NatsClient
from sqlmodel import col, func, select


def test_every_table_is_org_scoped_or_named() -> None:
    unscoped = {t.name for t in WorkersBase.metadata.sorted_tables if "org_id" not in t.c}
    assert unscoped == NOT_ORG_SCOPED


@pytest.fixture(scope="module")
async def gateway(wg_settings: WorkerGatewaySettings, migrated: str) -> AsyncIterator[WorkerGatewayRuntime]:
    """Served as `app.run` serves it: the rpc router plus the organization-deletion consumer on EVENTS."""
    async with serving(wg_settings) as ctx:
        yield ctx


async def _worker(rpc: RpcClient, actor: Actor | None) -> RegisterReply:
    invite = await rpc.call(endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=actor))
    await rpc.call(endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=actor))  # unused
    reg = RegisterRequest(invite_code=invite.code, name=unique_name("w"))
    return await rpc.call(endpoints.Workers.REGISTER, reg)


async def _counts(ctx: WorkerGatewayRuntime, org_id: str) -> tuple[int, int]:
    async with ctx.db.transaction() as s:
        workers = (await s.exec(select(func.count()).where(col(Worker.org_id) == org_id))).one()
        invites = (await s.exec(select(func.count()).where(col(WorkerInvite.org_id) == org_id))).one()
    return workers, invites


async def _authenticates(rpc: RpcClient, key: str) -> bool:
    try:
        await rpc.call(endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=key))
    except ServiceError as exc:
        if exc.status != 401:
            raise
        return False
    return True


async def test_organization_deleted_removes_workers_and_invites_once(
    gateway: WorkerGatewayRuntime, nc: NatsClient
) -> None:
    rpc = RpcClient(nc, timeout=5)
    gone = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    kept = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    doomed, survivor = await _worker(rpc, gone), await _worker(rpc, kept)
    platform = await _worker(rpc, None)  # the launcher's own worker: belongs to no org
    assert await _counts(gateway, gone.org_id) == (1, 2)

    js = nc.jetstream()
    seq = await publish_org_deleted_twice(js, gone.org_id)
    await wait_consumed(js, subjects.EVENTS_STREAM, durable_name(endpoints.Workers.QUEUE), seq)

    assert await _counts(gateway, gone.org_id) == (0, 0)
    assert not await _authenticates(rpc, doomed.worker_key), "the deleted org's worker key is dead"
    listed = await rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=gone))
    assert [w for w in listed if w.org_id == gone.org_id] == []
    assert await _counts(gateway, kept.org_id) == (1, 2), "another organization is untouched"
    assert await _authenticates(rpc, survivor.worker_key)
    assert await _authenticates(rpc, platform.worker_key)
    async with gateway.db.transaction() as s:
        assert set((await purge_org(s, gone.org_id)).values()) == {0}, "a third delivery removes nothing"
