"""The vault's settings, schema and sessions, and for the tests over NATS: the vault served on the real
broker, with worker-gateway, the scheduler and auth stood in by small in-test responders (other services;
this package must not import them). They are ordinary NATS subscribers that reply with the real contract
models, from the state a test puts in `Stand`. A stand-in worker has a real X25519 key pair (`WorkerKeyPair`),
as the real worker makes one at every start, so a test opens what the vault sealed to it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nats
import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.auth import OrgPolicy, WorkerOrgPolicyRequest
from browserfleet_contracts.common import Actor
from browserfleet_contracts.profiles import LeasedProfile, ProfileLease
from browserfleet_contracts.sealed import SealedBox
from browserfleet_contracts.tasks import ClaimInfo, ClaimInfoRequest, GetTaskRequest, TaskPublic, TaskSpec
from browserfleet_contracts.vault import (
    CredentialCreate,
    CredentialPublic,
    PutCredentialRequest,
    ReleasedSecrets,
    ReleaseReply,
)
from browserfleet_contracts.workers import WorkerAuthRequest, WorkerIdentity
from browserfleet_core import sealing
from browserfleet_core.errors import NotFound, ServiceError, Unauthorized
from browserfleet_core.messaging import ERROR_HEADER, RpcClient
from browserfleet_devkit.testing import ServiceSchema, unique_name
from browserfleet_vault.app import create_context
from browserfleet_vault.crypto import Keyring
from browserfleet_vault.models import SCHEMA
from browserfleet_vault.runtime import VaultRuntime
from browserfleet_vault.settings import VaultSettings
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

MASTER_KEY = os.urandom(32)


@pytest.fixture(scope="session")
def vault_settings(nats_url: str, database_url: str) -> VaultSettings:
    return VaultSettings(
        nats_url=nats_url,
        database_url=database_url,
        vault_master_key=base64.b64encode(MASTER_KEY).decode(),
        vault_master_key_version=1,
    )


@pytest.fixture(scope="session")
def keyring(vault_settings: VaultSettings) -> Keyring:
    return Keyring.from_settings(vault_settings)


@pytest.fixture(scope="session")
def service_schema() -> ServiceSchema:
    return ServiceSchema("browserfleet_vault", SCHEMA)


@pytest.fixture
def master_key() -> bytes:
    return MASTER_KEY


@dataclass
class WorkerKeyPair:
    """A stand-in worker process's key pair: its public half is what the stand-in worker-gateway says the
    worker registered; its private half opens the vault's boxes, as the real worker does."""

    worker_id: str
    private: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)

    @property
    def public_key(self) -> str:
        return sealing.public_key_text(self.private)

    def identity(self, org_id: str | None = None) -> WorkerIdentity:
        return WorkerIdentity(
            worker_id=self.worker_id, org_id=org_id, name="w", tags=[], public_key=self.public_key
        )

    def release(self, reply: ReleaseReply, task_id: str, attempt: int = 1) -> dict[str, str]:
        aad = sealing.binding(task_id, attempt, self.worker_id)
        return ReleasedSecrets.model_validate_json(
            sealing.open(self.private, reply.sealed, aad, purpose="release")
        ).values

    def lease(self, lease: ProfileLease, task_id: str, attempt: int = 1) -> LeasedProfile:
        assert lease.sealed is not None
        aad = sealing.binding(task_id, attempt, self.worker_id)
        return LeasedProfile.model_validate_json(
            sealing.open(self.private, lease.sealed, aad, purpose="profile_lease")
        )

    def seal_state(self, leased: LeasedProfile, task_id: str, state: Any, attempt: int = 1) -> SealedBox:
        aad = sealing.binding(task_id, attempt, self.worker_id)
        return sealing.seal(leased.save_key, json.dumps(state).encode(), aad, purpose="profile_save")


def admin(org: str) -> Actor:
    return Actor(org_id=org, user_id="u1", role="admin")


async def put(rpc: RpcClient, org: str, name: str, value: str) -> CredentialPublic:
    """Credential `name` of `org`, stored by an admin."""
    request = PutCredentialRequest(actor=admin(org), credential=CredentialCreate(name=name, value=value))
    return await rpc.call(endpoints.Vault.PUT_CREDENTIAL, request)


def running_claim(task_id: str, org: str, worker_id: str, names: list[str] | None = None) -> ClaimInfo:
    """What the stand-in scheduler says of a task that `worker_id` runs (its first attempt), naming `names`."""
    return ClaimInfo(
        task_id=task_id,
        org_id=org,
        status="running",
        attempt=1,
        worker_id=worker_id,
        secret_names=names or [],
    )


def running_task(task_id: str, org: str, profile: str | None, at: datetime) -> TaskPublic:
    """A running steps task of `org` naming `profile`, as the stand-in scheduler reads it."""
    return TaskPublic(
        id=task_id,
        org_id=org,
        title=None,
        kind="steps",
        status="running",
        priority="normal",
        worker_tags=[],
        spec=TaskSpec(steps=[{"action": "navigate", "url": "https://x.test"}], profile=profile),
        timeout_seconds=300,
        max_attempts=1,
        attempt=1,
        created_at=at,
        updated_at=at,
    )


@dataclass
class Stand:
    """State of the stand-in worker-gateway (its keys, and which keys it was asked about), scheduler (claims
    and tasks) and auth (org policies, and what it was asked for)."""

    workers: dict[str, WorkerIdentity] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    claims: dict[str, ClaimInfo] = field(default_factory=dict)
    tasks: dict[str, TaskPublic] = field(default_factory=dict)
    policies: dict[str, OrgPolicy] = field(default_factory=dict)
    policy_asks: list[WorkerOrgPolicyRequest] = field(default_factory=list)
    keys: dict[str, WorkerKeyPair] = field(default_factory=dict)  # by worker id

    def asked_about(self, key: str) -> int:
        return self.asked.count(key)

    def add_worker(self, worker_key: str, worker_id: str, org_id: str | None = None) -> WorkerKeyPair:
        """A worker registered with a key pair of its own (the stand-in worker-gateway knows its public key)."""
        pair = self.keys[worker_id] = WorkerKeyPair(worker_id)
        self.workers[worker_key] = pair.identity(org_id)
        return pair

    def hold(self, org: str, worker_key: str, names: list[str]) -> tuple[WorkerKeyPair, str]:
        """A new worker, registered under `worker_key`, running a new task of `org` that names `names`:
        (the worker, the task's id)."""
        worker, task_id = self.add_worker(worker_key, unique_name("w")), unique_name("task")
        self.claims[task_id] = running_claim(task_id, org, worker.worker_id, names)
        return worker, task_id

    def opened(self, reply: ReleaseReply, task_id: str) -> dict[str, str]:
        """A release as the worker holding `task_id`'s claim opens it."""
        claim = self.claims[task_id]
        assert claim.worker_id is not None
        return self.keys[claim.worker_id].release(reply, task_id, claim.attempt)


async def _reply_error(nc: NatsClient, msg: Msg, error: ServiceError) -> None:
    await nc.publish(
        msg.reply, error.body().model_dump_json().encode(), headers={ERROR_HEADER: str(error.status)}
    )


@pytest.fixture(scope="module")
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


@pytest.fixture(scope="module")
async def stand(nc: NatsClient) -> AsyncIterator[Stand]:
    state = Stand()

    async def authenticate(msg: Msg) -> None:
        key = WorkerAuthRequest.model_validate_json(msg.data).worker_key
        state.asked.append(key)
        identity = state.workers.get(key)
        if identity is None:
            await _reply_error(nc, msg, Unauthorized("unknown worker key"))
        else:
            await msg.respond(identity.model_dump_json().encode())

    async def claim_info(msg: Msg) -> None:
        task_id = ClaimInfoRequest.model_validate_json(msg.data).task_id
        claim = state.claims.get(task_id)
        if claim is None:
            await _reply_error(nc, msg, NotFound(f"task {task_id} not found"))
        else:
            await msg.respond(claim.model_dump_json().encode())

    async def get_task(msg: Msg) -> None:
        req = GetTaskRequest.model_validate_json(msg.data)
        task = state.tasks[req.task_id]
        assert req.actor.org_id == task.org_id
        await msg.respond(task.model_dump_json().encode())

    async def org_policy(msg: Msg) -> None:
        req = WorkerOrgPolicyRequest.model_validate_json(msg.data)
        state.policy_asks.append(req)
        if req.worker_key not in state.workers:
            await _reply_error(nc, msg, Unauthorized("unknown worker key"))
            return
        await msg.respond(state.policies.get(req.org_id, OrgPolicy()).model_dump_json().encode())

    subs = [
        await nc.subscribe(endpoints.Workers.AUTHENTICATE.subject, queue="stand-in", cb=authenticate),
        await nc.subscribe(endpoints.Scheduler.CLAIM_INFO.subject, queue="stand-in", cb=claim_info),
        await nc.subscribe(endpoints.Scheduler.GET_TASK.subject, queue="stand-in", cb=get_task),
        await nc.subscribe(endpoints.Auth.ORG_POLICY.subject, queue="stand-in", cb=org_policy),
    ]
    yield state
    for sub in subs:
        await sub.unsubscribe()


async def answering(nats_url: str) -> None:
    """Returns once the vault answers requests. Its SUBs are flushed on its own connection when `start`
    returns, yet a request sent right then on another connection was seen to get "no responders" now and then
    (about 1 in 5, measured over 30 starts; the retry always got through): a bad request it must refuse is
    sent until it is refused. Bounded; nothing is written by it."""
    probe = await nats.connect(nats_url)
    try:
        for _ in range(100):
            try:
                await probe.request(endpoints.Vault.PUT_CREDENTIAL.subject, b"{}", timeout=5)
                return
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.05)
        raise AssertionError("the vault never answered")
    finally:
        await probe.close()


@asynccontextmanager
async def serving(settings: VaultSettings) -> AsyncIterator[VaultRuntime]:
    """The vault's rpc subjects on the real broker."""
    rt = create_context(settings)
    await rt.broker.start()
    await answering(settings.nats_url)
    try:
        yield rt
    finally:
        await rt.broker.stop()
        await rt.db.dispose()


@pytest.fixture(scope="module")
async def vault(vault_settings: VaultSettings, migrated: str) -> AsyncIterator[VaultRuntime]:
    async with serving(vault_settings) as rt:
        yield rt


@pytest.fixture
def rpc(nc: NatsClient, vault: VaultRuntime, stand: Stand) -> RpcClient:
    return RpcClient(nc, timeout=5)
