"""Who a worker key belongs to, as the vault asks it on every secret release and profile use: through
`browserfleet_core.workerkeys.WorkerKeys`. What is sealed to the worker (a release, a lease) asks worker-gateway
every time, past the cache, so it goes only to the key registered now and never to a removed worker; a profile
save trusts a verified key for `worker_auth_cache_seconds`, a revoked key is refused once that time is up, and
a refused key is never cached.

Over the real NATS server and PostgreSQL; worker-gateway and the scheduler are stood in by conftest.py's
responders (other services; this package must not import them). The cache's clock is a test clock, so the
TTL runs out when the test says, not after a wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.profiles import ProfileAcquireRequest, ProfileLease, ProfileSaveRequest
from browserfleet_contracts.vault import (
    ReleaseReply,
    ReleaseRequest,
)
from browserfleet_core.db import utcnow
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_core.workerkeys import WorkerKeys, rpc_lookup
from browserfleet_devkit.testing import unique_name
from browserfleet_vault import repository
from browserfleet_vault.app import create_context
from browserfleet_vault.runtime import VaultRuntime
from browserfleet_vault.settings import VaultSettings
from pydantic import ValidationError

from .conftest import Stand, put, running_task, serving

TTL = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
async def vault(vault_settings: VaultSettings, migrated: str) -> AsyncIterator[VaultRuntime]:
    async with serving(vault_settings.model_copy(update={"worker_auth_cache_seconds": TTL})) as rt:
        yield rt


@pytest.fixture
def clock(vault: VaultRuntime) -> Clock:
    """A fresh cache on the test clock, built as `VaultRuntime` builds its own."""
    assert vault.workers.ttl == TTL
    now = Clock()
    vault.workers = WorkerKeys(rpc_lookup(lambda: vault.rpc), ttl_seconds=vault.workers.ttl, clock=now)
    return now


async def _running(rpc: RpcClient, stand: Stand, profile: str | None = None) -> tuple[str, str]:
    """A key of a new worker, and a task of a new org that worker runs, naming the org's secret A (and
    `profile`)."""
    org, key, names = unique_name("org"), unique_name("sk_worker_"), ["A"]
    await put(rpc, org, "A", "value-a")
    _, task_id = stand.hold(org, key, names)
    stand.tasks[task_id] = running_task(task_id, org, profile, utcnow())
    return key, task_id


async def _release(rpc: RpcClient, key: str, task_id: str) -> ReleaseReply:
    request = ReleaseRequest(task_id=task_id, worker_key=key, names=["A"])
    return await rpc.call(endpoints.Vault.RELEASE, request)


async def _refused(rpc: RpcClient, key: str, task_id: str) -> ServiceError:
    with pytest.raises(ServiceError) as exc:
        await _release(rpc, key, task_id)
    return exc.value


async def _releases(vault: VaultRuntime, task_id: str) -> int:
    async with vault.db.transaction() as session:
        return await repository.count_releases(session, task_id)


async def _acquire(rpc: RpcClient, key: str, task_id: str) -> ProfileLease:
    lease: ProfileLease = await rpc.call(
        endpoints.Vault.PROFILE_ACQUIRE, ProfileAcquireRequest(task_id=task_id, worker_key=key, profile="crm")
    )
    assert lease.granted and lease.lease_token
    return lease


async def _end_lease(rpc: RpcClient, key: str, task_id: str, lease: ProfileLease) -> None:
    assert lease.lease_token
    request = ProfileSaveRequest(
        task_id=task_id, worker_key=key, profile="crm", lease_token=lease.lease_token
    )
    await rpc.call(endpoints.Vault.PROFILE_SAVE, request)


async def test_what_is_sealed_to_a_worker_asks_every_time_a_save_is_trusted_until_the_ttl_is_up(
    rpc: RpcClient, stand: Stand, vault: VaultRuntime, clock: Clock
) -> None:
    """A release or a lease is sealed to the key worker-gateway has registered now, so it asks every time;
    a profile save seals nothing to the worker and is served from the cache."""
    key, task_id = await _running(rpc, stand, profile="crm")
    assert stand.opened(await _release(rpc, key, task_id), task_id) == {"A": "value-a"}
    assert stand.opened(await _release(rpc, key, task_id), task_id) == {"A": "value-a"}
    assert stand.asked_about(key) == 2
    lease = await _acquire(rpc, key, task_id)
    assert stand.asked_about(key) == 3
    await _end_lease(rpc, key, task_id, lease)  # a cached hit: the acquire's answer
    assert stand.asked_about(key) == 3

    lease = await _acquire(rpc, key, task_id)
    assert stand.asked_about(key) == 4
    clock.now += TTL  # expired: the save asks again
    await _end_lease(rpc, key, task_id, lease)
    assert stand.asked_about(key) == 5
    assert await _releases(vault, task_id) == 2


async def test_a_revoked_key_gets_nothing_sealed_at_once_and_its_save_is_refused_once_the_ttl_is_up(
    rpc: RpcClient, stand: Stand, vault: VaultRuntime, clock: Clock
) -> None:
    key, task_id = await _running(rpc, stand, profile="crm")
    assert stand.opened(await _release(rpc, key, task_id), task_id) == {"A": "value-a"}
    lease = await _acquire(rpc, key, task_id)
    asked = stand.asked_about(key)
    del stand.workers[key]  # revoked at worker-gateway

    clock.now += TTL - 0.5  # the bound the cache promises a save, not a grace it adds: still trusted here
    await _end_lease(rpc, key, task_id, lease)
    assert stand.asked_about(key) == asked
    # but nothing more is sealed to it, cache or not
    refused = await _refused(rpc, key, task_id)
    assert (refused.status, refused.message) == (401, "unknown worker key")
    assert stand.asked_about(key) == asked + 1
    with pytest.raises(ServiceError) as exc:
        await _acquire(rpc, key, task_id)
    assert exc.value.status == 401
    # a refusal is not cached: every later use asks again, and is refused again
    assert (await _refused(rpc, key, task_id)).status == 401
    assert stand.asked_about(key) == asked + 3
    assert await _releases(vault, task_id) == 1


async def test_an_unknown_key_is_refused_every_time_and_works_once_registered(
    rpc: RpcClient, stand: Stand, vault: VaultRuntime, clock: Clock
) -> None:
    key, task_id = await _running(rpc, stand)
    identity = stand.workers.pop(key)
    for asked in (1, 2):
        refused = await _refused(rpc, key, task_id)
        assert (refused.status, refused.message) == (401, "unknown worker key")
        assert stand.asked_about(key) == asked
    assert await _releases(vault, task_id) == 0
    stand.workers[key] = identity  # registered a moment later: no negative answer stands in its way
    assert stand.opened(await _release(rpc, key, task_id), task_id) == {"A": "value-a"}
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
