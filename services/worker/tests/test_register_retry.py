"""A registration whose reply is lost is sent again as it was, against the REAL worker-gateway (in-process,
real NATS and PostgreSQL): worker-gateway answers a repeated registration (same invite, same public key) with
the worker the first call made, so the retry must carry the same public key (one key pair per start, kept by
`_register` and resent by `_patiently`); and a registration waits longer than the other calls."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor
from browserfleet_contracts.endpoints import Endpoint, Rep, Req
from browserfleet_contracts.workers import (
    CreateInviteRequest,
    InviteCreate,
    ListWorkersRequest,
    RegisterRequest,
    WorkerAuthRequest,
)
from browserfleet_core.errors import Unavailable
from browserfleet_core.messaging import RpcClient
from browserfleet_core.migrations import upgrade
from browserfleet_devkit.testing import unique_name
from browserfleet_worker.presence import REGISTER_TIMEOUT_SECONDS, Identity, obtain_identity
from browserfleet_worker.settings import WorkerSettings
from browserfleet_worker_gateway import app as worker_gateway
from browserfleet_worker_gateway.runtime import WorkerGatewayRuntime
from browserfleet_worker_gateway.settings import WorkerGatewaySettings
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
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


class FirstReplyLost(RpcClient):
    """The first registration reaches worker-gateway, which registers the worker, but its reply does not reach
    the worker in time: the call fails as Unavailable (an RPC timeout), as when the reply came too late."""

    def __init__(self, nc: NatsClient) -> None:
        super().__init__(nc, timeout=5)
        self.registrations: list[tuple[RegisterRequest, float | None]] = []

    async def call(self, endpoint: Endpoint[Req, Rep], request: Req, *, timeout: float | None = None) -> Rep:
        reply = await super().call(endpoint, request, timeout=timeout)
        if isinstance(request, RegisterRequest):
            self.registrations.append((request, timeout))
            if len(self.registrations) == 1:
                raise Unavailable("svc.workers.register did not answer in time", code="service_timeout")
        return reply


def public_half(identity: Identity) -> str:
    assert identity.private_key is not None
    raw = identity.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_a_registration_whose_reply_was_lost_is_sent_again_as_it_was(
    nc: NatsClient, nats_url: str, tmp_path: Path
) -> None:
    rpc = FirstReplyLost(nc)
    admin = Actor(org_id=unique_name("org"), user_id="u1", role="admin")
    made = await rpc.call(
        endpoints.Workers.CREATE_INVITE, CreateInviteRequest(actor=admin, invite=InviteCreate(name="slow"))
    )  # a one-time invite: a second registration with another key pair would be refused for good
    settings = WorkerSettings(nats_url=nats_url, worker_invite_code=made.code, worker_state_dir=tmp_path)
    identity = await asyncio.wait_for(obtain_identity(settings, rpc, asyncio.Event()), WAIT_CAP)
    (first, first_timeout), (again, again_timeout) = rpc.registrations
    assert again == first and again.public_key == first.public_key == public_half(identity)
    # a registration waits longer than other calls: under load the first one is slow
    assert first_timeout == again_timeout == REGISTER_TIMEOUT_SECONDS > settings.rpc_timeout_seconds
    who = await rpc.call(endpoints.Workers.AUTHENTICATE, WorkerAuthRequest(worker_key=identity.worker_key))
    assert (who.worker_id, who.public_key) == (identity.worker_id, public_half(identity))
    listed = await rpc.call(endpoints.Workers.LIST, ListWorkersRequest(actor=admin))
    assert [w.id for w in listed if w.org_id == admin.org_id] == [identity.worker_id], "one worker, once"
