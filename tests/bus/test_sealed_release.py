"""A release, on the real platform, from each worker's own bus identity (issue 11, item 5): sealed to the key
worker-gateway has registered for the worker holding the attempt, and to nothing else. A worker that
registered no key is refused with the reason and given nothing; a re-registration's new key is used at once
and the old one refused; another worker, another attempt, another worker's key get nothing that opens. The
privileged test client reads every message meanwhile: the value is in none, in any form."""

from __future__ import annotations

import pytest
from browserfleet_contracts import endpoints, subjects
from browserfleet_contracts.common import Actor
from browserfleet_contracts.tasks import (
    ClaimRequest,
    CreateTaskRequest,
    TaskCreate,
    TaskPublic,
)
from browserfleet_contracts.vault import (
    CredentialCreate,
    PutCredentialRequest,
    ReleasedSecrets,
    ReleaseReply,
    ReleaseRequest,
)
from browserfleet_contracts.workers import RotateKeyRequest, WorkerIdentity
from browserfleet_core import sealing
from browserfleet_core.errors import ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.testing import unique_name
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from .conftest import EDGE_TAG, Bus, Registered, result_of
from .test_forged_updates import until
from .test_no_secret_on_bus import forms

pytestmark = pytest.mark.e2e

VALUE = 'pw-Sealed!"release\\9Kx'


def key_text(key: X25519PrivateKey) -> str:
    return sealing.public_key_text(key)


async def rotate(nc: NatsClient, worker: Registered, key: X25519PrivateKey) -> None:
    """What every start of a known worker does: register a new key pair's public half."""
    who: WorkerIdentity = await RpcClient(nc).call(
        endpoints.Workers.ROTATE_KEY, RotateKeyRequest(worker_key=worker.key, public_key=key_text(key))
    )
    assert who.public_key == key_text(key)


async def refusal(nc: NatsClient, request: ReleaseRequest) -> ServiceError:
    with pytest.raises(ServiceError) as exc:
        await RpcClient(nc).call(endpoints.Vault.RELEASE, request)
    return exc.value


def values(plaintext: bytes) -> dict[str, str]:
    return ReleasedSecrets.model_validate_json(plaintext).values


def opened(key: X25519PrivateKey, reply: ReleaseReply, task_id: str, attempt: int, worker_id: str) -> bytes:
    return sealing.open(key, reply.sealed, sealing.binding(task_id, attempt, worker_id), purpose="release")


async def test_a_release_opens_only_for_the_holders_registered_key(
    bus_platform: Bus, admin: NatsClient
) -> None:
    rpc = RpcClient(admin, timeout=15)
    actor = Actor(org_id=bus_platform.org_id, user_id="bus-test", role="admin")
    name = unique_name("SEALED_").upper()
    await rpc.call(
        endpoints.Vault.PUT_CREDENTIAL,
        PutCredentialRequest(actor=actor, credential=CredentialCreate(name=name, value=VALUE)),
    )
    # two workers of the org in a pool no running worker pulls, registered without a key (as an HTTP-only
    # worker may): the test plays both, over their own bus identities
    holder = await bus_platform.register(
        org_id=bus_platform.org_id, pool="edge", name="holder", tags=(EDGE_TAG,)
    )
    other = await bus_platform.register(
        org_id=bus_platform.org_id, pool="edge", name="other", tags=(EDGE_TAG,)
    )
    steps = [{"action": "fill", "selector": "#password", "value": f"{{{{ secrets.{name} }}}}"}]
    created: TaskPublic = await rpc.call(
        endpoints.Scheduler.CREATE_TASK,
        CreateTaskRequest(
            actor=actor,
            task=TaskCreate.model_validate({"steps": steps, "worker_tags": [EDGE_TAG], "max_attempts": 1}),
        ),
    )
    task_id = created.id
    await until(rpc, actor, task_id, "assigned")

    carried: list[Msg] = []

    async def record(msg: Msg) -> None:
        carried.append(msg)

    await admin.subscribe(">", cb=record)
    await admin.flush()
    nc_holder, nc_other = await bus_platform.as_worker(holder.key), await bus_platform.as_worker(other.key)
    try:
        claim = await RpcClient(nc_holder).call(
            endpoints.Scheduler.CLAIM, ClaimRequest(task_id=task_id, attempt=1, worker_key=holder.key)
        )
        assert claim.granted, claim.reason

        def ask(worker: Registered = holder, attempt: int = 1, key: str | None = None) -> ReleaseRequest:
            return ReleaseRequest(
                task_id=task_id, worker_key=worker.key, names=[name], attempt=attempt, public_key=key
            )

        # no key registered: refused, saying why, and nothing released
        refused = await refusal(nc_holder, ask())
        assert (refused.status, refused.code) == (403, "public_key_missing")
        assert f"worker {holder.worker_id} has no registered public key" in refused.message

        # the holder (re-)registers a key pair: the release is sealed to it, for this task, attempt, worker
        first, other_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        await rotate(nc_holder, holder, first)
        await rotate(nc_other, other, other_key)
        reply: ReleaseReply = await RpcClient(nc_holder).call(
            endpoints.Vault.RELEASE, ask(key=key_text(first))
        )
        assert reply.sealed.to == key_text(first)
        assert values(opened(first, reply, task_id, 1, holder.worker_id)) == {name: VALUE}
        for key, attempt, worker_id in (
            (other_key, 1, other.worker_id),  # worker B's key, as itself or as the holder
            (other_key, 1, holder.worker_id),
            (first, 2, holder.worker_id),  # the holder's key, for another attempt or another task's binding
            (first, 1, other.worker_id),
        ):
            with pytest.raises(sealing.SealError):
                opened(key, reply, task_id, attempt, worker_id)
        with pytest.raises(sealing.SealError):
            opened(first, reply, unique_name("task"), 1, holder.worker_id)

        # worker B asking for the holder's task, the holder asking for another attempt: refused
        refused = await refusal(nc_other, ask(worker=other, key=key_text(other_key)))
        assert (refused.status, refused.code) == (403, "release_denied")
        refused = await refusal(nc_holder, ask(attempt=2, key=key_text(first)))
        assert (refused.status, refused.field) == (403, "attempt")

        # a restart registers a new key pair: it is used at once, and the old key is refused
        second = X25519PrivateKey.generate()
        await rotate(nc_holder, holder, second)
        refused = await refusal(nc_holder, ask(key=key_text(first)))
        assert (refused.status, refused.code) == (409, "public_key_mismatch")
        for request in (ask(key=key_text(second)), ask()):
            reply = await RpcClient(nc_holder).call(endpoints.Vault.RELEASE, request)
            assert reply.sealed.to == key_text(second)
            assert values(opened(second, reply, task_id, 1, holder.worker_id)) == {name: VALUE}
            with pytest.raises(sealing.SealError, match="another public key"):
                opened(first, reply, task_id, 1, holder.worker_id)

        # the attempt ends with the cause the keyless worker was given (what the worker does with a refusal)
        cause = "secrets not released: no registered public key"
        result = result_of(task_id, holder.worker_id, "failed", error_message=cause)
        await nc_holder.jetstream().publish(
            subjects.task_update(holder.worker_id, task_id), result.model_dump_json().encode()
        )
        await until(rpc, actor, task_id, "failed")
        await admin.flush()
    finally:
        await nc_holder.close()
        await nc_other.close()

    assert carried, "the privileged client read nothing"
    assert [m.subject for m in carried if any(f in m.data for f in forms(VALUE))] == []
