"""Releases leave the vault sealed to the worker holding the task (its registered X25519 key), over the real
NATS server and PostgreSQL with conftest.py's stand-ins for worker-gateway, the scheduler and auth: what is
on the wire holds no value in any form, opens with that worker's key for that task and attempt only, a
worker without a key gets a refusal (never a value), and a restarted worker's new key is what it is sealed
to."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.profiles import ProfileAcquireRequest
from browserfleet_contracts.vault import ReleaseReply, ReleaseRequest
from browserfleet_core import sealing
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.testing import unique_name
from browserfleet_vault import repository
from browserfleet_vault.runtime import VaultRuntime

from .conftest import Stand, WorkerKeyPair, put

VALUE = "pw-Vault!sealed-horse-7Z"


def forms(value: str) -> list[bytes]:
    raw = value.encode()
    return [
        raw,
        urllib.parse.quote(value, safe="").encode(),
        urllib.parse.quote_plus(value).encode(),
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        json.dumps(value).encode()[1:-1],
    ]


async def _setup(rpc: RpcClient, stand: Stand) -> tuple[str, str, WorkerKeyPair]:
    """An org with credential SITE_PW, a worker with a key pair, and a running task it holds."""
    org, key = unique_name("org"), unique_name("sk_worker_")
    await put(rpc, org, "SITE_PW", VALUE)
    worker, task_id = stand.hold(org, key, ["SITE_PW"])
    return key, task_id, worker


async def _raw_release(rpc: RpcClient, request: ReleaseRequest) -> bytes:
    """The reply exactly as NATS carries it (what worker-gateway would relay, what a log could catch)."""
    msg = await rpc.nc.request(endpoints.Vault.RELEASE.subject, request.model_dump_json().encode(), timeout=5)
    return bytes(msg.data)


async def _releases(vault: VaultRuntime, task_id: str) -> int:
    async with vault.db.transaction() as session:
        return await repository.count_releases(session, task_id)


async def test_a_release_opens_for_the_worker_holding_the_task_only(rpc: RpcClient, stand: Stand) -> None:
    key, task_id, worker_a = await _setup(rpc, stand)
    worker_b = stand.add_worker(unique_name("sk_worker_"), unique_name("w"))  # registered too, same org
    request = ReleaseRequest(
        task_id=task_id, worker_key=key, names=["SITE_PW"], attempt=1, public_key=worker_a.public_key
    )
    raw = await _raw_release(rpc, request)
    assert [f for f in forms(VALUE) if f in raw] == []
    reply = ReleaseReply.model_validate_json(raw)
    assert reply.sealed.to == worker_a.public_key
    assert worker_a.release(reply, task_id) == {"SITE_PW": VALUE}

    with pytest.raises(sealing.SealError, match="another public key"):
        worker_b.release(reply, task_id)
    # worker B claiming the box was for it, under its own binding or A's: the tag fails
    for who in (worker_b.worker_id, worker_a.worker_id):
        aad = sealing.binding(task_id, 1, who)
        readdressed = reply.sealed.model_copy(update={"to": worker_b.public_key})
        with pytest.raises(sealing.SealError, match="failed authentication"):
            sealing.open(worker_b.private, readdressed, aad, purpose="release")
    # A's own key opens it for this task, attempt and worker only
    for aad in (
        sealing.binding(task_id, 2, worker_a.worker_id),
        sealing.binding(unique_name("task"), 1, worker_a.worker_id),
        sealing.binding(task_id, 1, worker_b.worker_id),
    ):
        with pytest.raises(sealing.SealError, match="failed authentication"):
            sealing.open(worker_a.private, reply.sealed, aad, purpose="release")


async def test_a_worker_without_a_public_key_is_refused_and_given_nothing(
    rpc: RpcClient, stand: Stand, vault: VaultRuntime
) -> None:
    key, task_id, worker = await _setup(rpc, stand)
    stand.workers[key] = worker.identity().model_copy(update={"public_key": None})
    raw = await _raw_release(rpc, ReleaseRequest(task_id=task_id, worker_key=key, names=["SITE_PW"]))
    assert [f for f in forms(VALUE) if f in raw] == []
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            endpoints.Vault.RELEASE, ReleaseRequest(task_id=task_id, worker_key=key, names=["SITE_PW"])
        )
    assert (exc.value.status, exc.value.code) == (403, "public_key_missing")
    assert "no registered public key" in exc.value.message
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            endpoints.Vault.PROFILE_ACQUIRE,
            ProfileAcquireRequest(task_id=task_id, worker_key=key, profile="crm"),
        )
    assert (exc.value.status, exc.value.code) == (403, "public_key_missing")
    assert await _releases(vault, task_id) == 0


async def test_a_release_for_another_attempt_is_refused(
    rpc: RpcClient, stand: Stand, vault: VaultRuntime
) -> None:
    key, task_id, _ = await _setup(rpc, stand)
    with pytest.raises(ServiceError) as exc:
        await rpc.call(
            endpoints.Vault.RELEASE,
            ReleaseRequest(task_id=task_id, worker_key=key, names=["SITE_PW"], attempt=2),
        )
    assert (exc.value.status, exc.value.field) == (403, "attempt")
    assert "runs attempt 1, not 2" in exc.value.message
    assert await _releases(vault, task_id) == 0


async def test_a_restarted_worker_is_sealed_to_its_new_key(
    rpc: RpcClient, stand: Stand, vault: VaultRuntime
) -> None:
    """A restart registers a new key pair (a rotation at worker-gateway): the vault asks worker-gateway before
    every release, so the new key is what it seals to at once, and a request naming the old key is refused."""
    key, task_id, first_run = await _setup(rpc, stand)
    reply = await rpc.call(
        endpoints.Vault.RELEASE,
        ReleaseRequest(task_id=task_id, worker_key=key, names=["SITE_PW"], public_key=first_run.public_key),
    )
    assert first_run.release(reply, task_id) == {"SITE_PW": VALUE}
    asked = stand.asked_about(key)

    second_run = stand.add_worker(key, first_run.worker_id)  # the restart registered a new public key
    reply = await rpc.call(
        endpoints.Vault.RELEASE,
        ReleaseRequest(task_id=task_id, worker_key=key, names=["SITE_PW"], public_key=second_run.public_key),
    )
    assert stand.asked_about(key) == asked + 1, "asked past the cache"
    assert reply.sealed.to == second_run.public_key
    assert second_run.release(reply, task_id) == {"SITE_PW": VALUE}
    # a request that names no key is sealed to the registered one too, never to the cached old one
    unnamed = await rpc.call(
        endpoints.Vault.RELEASE, ReleaseRequest(task_id=task_id, worker_key=key, names=["SITE_PW"])
    )
    assert unnamed.sealed.to == second_run.public_key
    with pytest.raises(sealing.SealError, match="another public key"):
        first_run.release(unnamed, task_id)

    # a key worker-gateway does not have for this worker (a stale process, or someone else's): nothing sealed
    for stale in (first_run.public_key, WorkerKeyPair("x").public_key):
        with pytest.raises(ServiceError) as exc:
            await rpc.call(
                endpoints.Vault.RELEASE,
                ReleaseRequest(task_id=task_id, worker_key=key, names=["SITE_PW"], public_key=stale),
            )
        assert (exc.value.status, exc.value.code, exc.value.field) == (
            409,
            "public_key_mismatch",
            "public_key",
        )
    assert await _releases(vault, task_id) == 3
