"""One platform for the bus tests, started as `make dev` starts it (devstack: the authenticated NATS, every
service as its own process, one worker), and the ways in: as a service's identity, as `admin`, as a worker
registered through worker-gateway's auth callout, as nobody."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import nats
import pytest
from browserfleet_contracts import bus, endpoints
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import TaskUpdateMessage
from browserfleet_contracts.workers import CreateInviteRequest, InviteCreate, RegisterReply, RegisterRequest
from browserfleet_core.messaging import BusCredentials, RpcClient, connect
from browserfleet_devkit.devstack import Platform
from nats.aio.client import Client as NatsClient

from ..platforms import own_platform

EDGE_TAG = "bus-edge"


@dataclass
class Registered:
    worker_id: str
    key: str
    pool: str
    org_id: str | None


class Bus:
    def __init__(self, platform: Platform, lines: list[str]) -> None:
        self.platform = platform
        self.lines = lines

    @property
    def url(self) -> str:
        assert self.platform.nats_url
        return self.platform.nats_url

    @property
    def org_id(self) -> str:
        assert self.platform.bootstrap is not None
        return self.platform.bootstrap.org_id

    async def admin(self) -> NatsClient:
        return await self.platform.connect_admin("bus-test-admin")

    async def as_service(self, identity: str, **options: object) -> NatsClient:
        assert self.platform.secrets is not None
        creds = self.platform.secrets.credentials(identity)
        return await connect(self.url, name=f"bus-test-{identity}", credentials=creds, **options)

    async def as_worker(self, key: str, **options: object) -> NatsClient:
        creds = BusCredentials.worker(key)
        return await connect(self.url, name="bus-test-worker", credentials=creds, **options)

    async def as_registrant(self, invite_code: str, **options: object) -> NatsClient:
        creds = BusCredentials.registrant(invite_code)
        return await connect(self.url, name="bus-test-registrant", credentials=creds, **options)

    async def invite(self, org_id: str | None = None, pool: str = "default", multi_use: bool = False) -> str:
        admin = await self.admin()
        try:
            actor = Actor(org_id=org_id, user_id="bus-test", role="admin") if org_id else None
            invite = await RpcClient(admin).call(
                endpoints.Workers.CREATE_INVITE,
                CreateInviteRequest(actor=actor, invite=InviteCreate(pool=pool, multi_use=multi_use)),
            )
        finally:
            await admin.close()
        return invite.code

    async def register(
        self, *, org_id: str | None, pool: str = "default", name: str = "bus-test", tags: tuple[str, ...] = ()
    ) -> Registered:
        """A worker identity the way a worker gets one: an invite (made as the operator, or as the org's
        admin through the gateway's identity), traded for a key over a registrant connection."""
        code = await self.invite(org_id, pool)
        registrant = await self.as_registrant(code)
        try:
            reply: RegisterReply = await RpcClient(registrant).call(
                endpoints.Workers.REGISTER, RegisterRequest(invite_code=code, name=name, tags=list(tags))
            )
        finally:
            await registrant.close()
        return Registered(reply.worker_id, reply.worker_key, reply.pool, reply.org_id)


@pytest.fixture(scope="session")
def bus_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    lines: list[str] = []
    env = {"LOG_LEVEL": "INFO", "BUS_KICK_SWEEP_SECONDS": "3600"}
    if not os.environ.get("WEBHOOK_MASTER_KEY"):
        env["WEBHOOK_MASTER_KEY"] = base64.b64encode(os.urandom(32)).decode()
    with own_platform(
        "bf_bus", tmp_path_factory.mktemp("bus-home"), output=lines.append, env=env
    ) as platform:
        yield Bus(platform, lines)


@pytest.fixture(scope="session")
async def org_worker(bus_platform: Bus) -> Registered:
    # its tag routes a task to its pool alone: no running worker pulls it there
    return await bus_platform.register(
        org_id=bus_platform.org_id, pool="edge", name="org-worker", tags=(EDGE_TAG,)
    )


@pytest.fixture(scope="session")
async def platform_worker(bus_platform: Bus) -> Registered:
    return await bus_platform.register(org_id=None, pool="default", name="platform-worker")


@pytest.fixture(scope="session")
async def invite_code(bus_platform: Bus) -> str:
    """A usable pool invite: a registrant identity for the matrix (it is never used up)."""
    return await bus_platform.invite(pool="default", multi_use=True)


@pytest.fixture
async def admin(bus_platform: Bus) -> AsyncIterator[NatsClient]:
    nc = await bus_platform.admin()
    try:
        yield nc
    finally:
        await nc.close()


def result_of(
    task_id: str, worker_id: str, status: Literal["completed", "failed"], **more: Any
) -> TaskUpdateMessage:
    """Attempt 1's result as the worker `worker_id` reports it (or as another forges it in that name)."""
    return TaskUpdateMessage(
        task_id=task_id, attempt=1, worker_id=worker_id, kind="result", status=status, **more
    )


async def refused(url: str, **options: object) -> str:
    """The error a connection attempt ends with (AssertionError when it is let in)."""
    try:
        nc = await nats.connect(
            url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5, **options
        )
    except Exception as exc:
        return str(exc)
    await nc.close()
    raise AssertionError(f"connected with {sorted(options)}")


__all__ = ["Bus", "Registered", "bus", "refused"]
