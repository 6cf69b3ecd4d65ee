"""Who a worker key belongs to, as the vault asks it on every secret release and profile use: through
`browserfleet_core.workerkeys.WorkerKeys`, so a verified key is trusted for `worker_auth_cache_seconds`
without asking worker-gateway again, a revoked key is refused once that time is up, and a refused key is
never cached.

Over the real NATS server and PostgreSQL; worker-gateway and the scheduler are stood in by small in-test
responders (other services; this package must not import them). The cache's clock is a test clock, so the
TTL runs out when the test says, not after a wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats
import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.profiles import ProfileAcquireRequest, ProfileLease
from browserfleet_contracts.tasks import ClaimInfo, ClaimInfoRequest, GetTaskRequest, TaskPublic, TaskSpec
from browserfleet_contracts.vault import (
    CredentialCreate,
    CredentialPublic,
    PutCredentialRequest,
    ReleaseReply,
    ReleaseRequest,
)
from browserfleet_contracts.workers import WorkerAuthRequest, WorkerIdentity
from browserfleet_core.db import utcnow
from browserfleet_core.errors import NotFound, ServiceError, Unauthorized
from browserfleet_core.messaging import ERROR_HEADER, RpcClient
from browserfleet_core.testing import unique_name
from browserfleet_core.workerkeys import WorkerKeys, rpc_lookup
from browserfleet_vault import repository
from browserfleet_vault.app import VaultContext, create_context
from browserfleet_vault.settings import VaultSettings
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import ValidationError

TTL = 30.0


@dataclass
class Stand:
    """The stand-in worker-gateway's keys and what it was asked; the stand-in scheduler's tasks."""

    workers: dict[str, WorkerIdentity] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    claims: dict[str, ClaimInfo] = field(default_factory=dict)
    tasks: dict[str, TaskPublic] = field(default_factory=dict)

    def asked_about(self, key: str) -> int:
        return self.asked.count(key)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
        await msg.respond(
            state.tasks[GetTaskRequest.model_validate_json(msg.data).task_id].model_dump_json().encode()
        )

    subs = [
        await nc.subscribe(subjects.Workers.AUTHENTICATE, queue="stand-in", cb=authenticate),
        await nc.subscribe(subjects.Scheduler.CLAIM_INFO, queue="stand-in", cb=claim_info),
        await nc.subscribe(subjects.Scheduler.GET_TASK, queue="stand-in", cb=get_task),
    ]
    yield state
    for sub in subs:
        await sub.unsubscribe()


@pytest.fixture(scope="module")
async def vault(vault_settings: VaultSettings, vault_migrated: str) -> AsyncIterator[VaultContext]:
    ctx = create_context(vault_settings.model_copy(update={"worker_auth_cache_seconds": TTL}))
    await ctx.broker.start()
    # its SUBs went out on its own connection: a PING round trip makes sure the server has them
    await ctx.broker.connection.flush()
    yield ctx
    await ctx.broker.stop()
    await ctx.db.dispose()


@pytest.fixture
def clock(vault: VaultContext) -> Clock:
    """A fresh cache on the test clock, built as `create_context` builds the vault's own."""
    assert vault.workers.ttl == TTL
    now = Clock()
    vault.workers = WorkerKeys(rpc_lookup(lambda: vault.rpc), ttl_seconds=vault.workers.ttl, clock=now)
    return now


@pytest.fixture
def rpc(nc: NatsClient, vault: VaultContext, stand: Stand) -> RpcClient:
    return RpcClient(nc, timeout=5)


def _running(stand: Stand, org: str, names: list[str], profile: str | None = None) -> tuple[str, str]:
    """A key of a new worker, and a task that worker runs (naming `names` and `profile`)."""
    key, worker_id, task_id = unique_name("sk_worker_"), unique_name("w"), unique_name("task")
    stand.workers[key] = WorkerIdentity(worker_id=worker_id, org_id=None, name="w", tags=[])
    stand.claims[task_id] = ClaimInfo(
        task_id=task_id, org_id=org, status="running", attempt=1, worker_id=worker_id, secret_names=names
    )
    now = utcnow()
    stand.tasks[task_id] = TaskPublic(
        id=task_id,
        org_id=org,
        title=None,
        kind="steps",
        status="running",
        priority="normal",
        worker_tags=[],
        spec=TaskSpec(steps=[{"action": "navigate", "url": "https://x.test"}], profile=profile),  # type: ignore[list-item]
        timeout_seconds=300,
        max_attempts=1,
        attempt=1,
        created_at=now,
        updated_at=now,
    )
    return key, task_id


async def _secret(rpc: RpcClient, org: str) -> None:
    request = PutCredentialRequest(
        actor=Actor(org_id=org, user_id="u1", role="admin"),
        credential=CredentialCreate(name="A", value="value-a"),
    )
    await rpc.call(subjects.Vault.PUT_CREDENTIAL, request, CredentialPublic)


async def _release(rpc: RpcClient, key: str, task_id: str) -> ReleaseReply:
    request = ReleaseRequest(task_id=task_id, worker_key=key, names=["A"])
    return await rpc.call(subjects.Vault.RELEASE, request, ReleaseReply)


async def _refused(rpc: RpcClient, key: str, task_id: str) -> ServiceError:
    with pytest.raises(ServiceError) as exc:
        await _release(rpc, key, task_id)
    return exc.value


async def _releases(vault: VaultContext, task_id: str) -> int:
    async with vault.db.transaction() as session:
        return await repository.count_releases(session, task_id)


async def test_a_known_key_is_asked_about_once_then_trusted_until_the_ttl_is_up(
    rpc: RpcClient, stand: Stand, vault: VaultContext, clock: Clock
) -> None:
    org = unique_name("org")
    await _secret(rpc, org)
    key, task_id = _running(stand, org, ["A"], profile="crm")
    assert (await _release(rpc, key, task_id)).values == {"A": "value-a"}
    assert stand.asked_about(key) == 1
    # a cached hit, on either path a worker's key comes in by: worker-gateway is not asked again
    assert (await _release(rpc, key, task_id)).values == {"A": "value-a"}
    acquire = ProfileAcquireRequest(task_id=task_id, worker_key=key, profile="crm")
    assert (await rpc.call(subjects.Vault.PROFILE_ACQUIRE, acquire, ProfileLease)).granted
    assert stand.asked_about(key) == 1

    clock.now += TTL  # expired: the next use asks again
    assert (await _release(rpc, key, task_id)).values == {"A": "value-a"}
    assert stand.asked_about(key) == 2
    assert await _releases(vault, task_id) == 3


async def test_a_revoked_key_is_refused_once_the_ttl_is_up(
    rpc: RpcClient, stand: Stand, vault: VaultContext, clock: Clock
) -> None:
    org = unique_name("org")
    await _secret(rpc, org)
    key, task_id = _running(stand, org, ["A"])
    assert (await _release(rpc, key, task_id)).values == {"A": "value-a"}
    del stand.workers[key]  # revoked at worker-gateway

    clock.now += TTL - 0.5  # the bound the cache promises, not a grace it adds: still trusted here
    assert (await _release(rpc, key, task_id)).values == {"A": "value-a"}
    assert stand.asked_about(key) == 1
    clock.now += 0.5
    refused = await _refused(rpc, key, task_id)
    assert (refused.status, refused.message) == (401, "unknown worker key")
    assert stand.asked_about(key) == 2
    # a refusal is not cached: every later use asks again, and is refused again
    assert (await _refused(rpc, key, task_id)).status == 401
    assert stand.asked_about(key) == 3
    assert await _releases(vault, task_id) == 2


async def test_an_unknown_key_is_refused_every_time_and_works_once_registered(
    rpc: RpcClient, stand: Stand, vault: VaultContext, clock: Clock
) -> None:
    org = unique_name("org")
    await _secret(rpc, org)
    key, task_id = _running(stand, org, ["A"])
    identity = stand.workers.pop(key)
    for asked in (1, 2):
        refused = await _refused(rpc, key, task_id)
        assert (refused.status, refused.message) == (401, "unknown worker key")
        assert stand.asked_about(key) == asked
    assert await _releases(vault, task_id) == 0
    stand.workers[key] = identity  # registered a moment later: no negative answer stands in its way
    assert (await _release(rpc, key, task_id)).values == {"A": "value-a"}
    assert stand.asked_about(key) == 3


def test_the_ttl_is_a_setting(vault_settings: VaultSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert VaultSettings.model_fields["worker_auth_cache_seconds"].default == 30.0  # the scheduler's default
    master = vault_settings.vault_master_key.get_secret_value()
    monkeypatch.setenv("WORKER_AUTH_CACHE_SECONDS", "7.5")
    settings = VaultSettings(nats_url=vault_settings.nats_url, vault_master_key=master)
    assert create_context(settings).workers.ttl == 7.5
    monkeypatch.setenv("WORKER_AUTH_CACHE_SECONDS", "-1")
    with pytest.raises(ValidationError, match="worker_auth_cache_seconds"):
        VaultSettings(nats_url=vault_settings.nats_url, vault_master_key=master)
