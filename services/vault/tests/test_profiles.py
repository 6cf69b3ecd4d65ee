"""Browser profiles: encrypted storage states and the lease that keeps two tasks from clobbering one.

Service logic against the real PostgreSQL schema (rolled back), two real concurrent transactions for the
row lock, and the subjects over the real NATS server with the scheduler and worker-gateway stood in by
conftest.py's responders (other services; this package must not import them).
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from browserfleet_contracts import endpoints
from browserfleet_contracts.common import Actor
from browserfleet_contracts.profiles import (
    MAX_PROFILE_STATE_BYTES,
    ListProfilesRequest,
    ProfileAcquireRequest,
    ProfileLease,
    ProfileNameRequest,
    ProfilePublic,
    ProfileSaveReply,
    ProfileSaveRequest,
)
from browserfleet_contracts.sealed import SealedBox
from browserfleet_contracts.tasks import ClaimInfo, TaskPublic
from browserfleet_core import sealing
from browserfleet_core.db import Database
from browserfleet_core.errors import Conflict, Forbidden, Invalid, ServiceError
from browserfleet_core.messaging import RpcClient
from browserfleet_devkit.testing import unique_name
from browserfleet_vault import crypto, repository
from browserfleet_vault import profile_leases as service
from browserfleet_vault.crypto import Keyring
from sqlmodel.ext.asyncio.session import AsyncSession

from .conftest import Stand, WorkerKeyPair, running_claim, running_task

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
COOKIE = "session-cookie-value-Zx81"
STATE: dict[str, Any] = {
    "cookies": [{"name": "session", "value": COOKIE, "domain": "127.0.0.1", "path": "/"}],
    "origins": [{"origin": "http://127.0.0.1", "localStorage": [{"name": "k", "value": "v"}]}],
}


W1 = WorkerKeyPair("w1")  # the worker holding every task of the service-level tests


def grant(org: str, task: str, profile: str = "crm", lease: float = 60) -> service.ProfileGrant:
    return service.ProfileGrant(
        task_id=task,
        org_id=org,
        worker_id="w1",
        profile=profile,
        lease_seconds=lease,
        attempt=1,
        public_key=W1.public_key,
    )


def state_back(lease: ProfileLease, task: str, state: Any = STATE) -> Any:
    """The storage state as the worker holding `lease` sends it back: sealed to the lease's save key."""
    return W1.seal_state(W1.lease(lease, task), task, state)


async def test_round_trip_is_encrypted_and_binds_the_name(session: AsyncSession, keyring: Keyring) -> None:
    org = unique_name("org")
    first = await service.acquire_profile(session, keyring, grant(org, "t1"), NOW)
    assert first.granted and W1.lease(first, "t1").state is None and first.version == 0 and first.lease_token
    saved = await service.save_profile(
        session, keyring, grant(org, "t1"), first.lease_token, state_back(first, "t1"), NOW
    )
    assert saved == ProfileSaveReply(saved=True, version=1)

    row = await repository.get_profile(session, org, "crm")
    assert row is not None and row.ciphertext is not None and row.nonce is not None
    assert COOKIE.encode() not in row.ciphertext and row.lease_token is None

    second = await service.acquire_profile(session, keyring, grant(org, "t2"), NOW)
    assert second.granted and W1.lease(second, "t2").state == STATE and second.version == 1
    assert COOKIE not in second.model_dump_json()  # the lease carries the state sealed only

    # the name is associated data: the same ciphertext under another profile's name does not decrypt
    key = keyring.unwrap(org, *await _wrapped(session, row.data_key_id))
    assert json.loads(crypto.decrypt_profile(key, org, "crm", row.nonce, row.ciphertext)) == STATE
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_profile(key, org, "other", row.nonce, row.ciphertext)
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_value(key, org, "crm", row.nonce, row.ciphertext)  # nor as a credential


async def _wrapped(session: AsyncSession, data_key_id: str | None) -> tuple[bytes, int]:
    assert data_key_id is not None
    dk = (await repository.get_data_keys(session, [data_key_id]))[data_key_id]
    return dk.wrapped_key, dk.master_key_version


async def test_a_held_lease_refuses_another_task_until_saved_or_expired(
    session: AsyncSession, keyring: Keyring
) -> None:
    org = unique_name("org")
    a = await service.acquire_profile(session, keyring, grant(org, "task-a", lease=60), NOW)
    assert a.granted and a.lease_token
    b = await service.acquire_profile(session, keyring, grant(org, "task-b"), NOW + timedelta(seconds=59))
    assert (b.granted, b.held_by_task, b.lease_token) == (False, "task-a", None)
    assert b.expires_at == NOW + timedelta(seconds=60)

    # a's lease ran out (its worker died): b takes the profile over ...
    b = await service.acquire_profile(session, keyring, grant(org, "task-b"), NOW + timedelta(seconds=61))
    assert b.granted and b.lease_token
    # ... and a late save from a cannot overwrite what b will save
    with pytest.raises(Conflict) as exc:
        await service.save_profile(
            session, keyring, grant(org, "task-a"), a.lease_token, state_back(a, "task-a", {"x": 1}), NOW
        )
    assert exc.value.code == "profile_lease_lost" and exc.value.field == "lease_token"
    # b ends its lease without saving (its task failed): the stored state is unchanged, the next task runs
    assert await service.save_profile(
        session, keyring, grant(org, "task-b"), b.lease_token, None, NOW
    ) == ProfileSaveReply(saved=False, version=0)
    c = await service.acquire_profile(session, keyring, grant(org, "task-c"), NOW + timedelta(seconds=62))
    assert c.granted and W1.lease(c, "task-c").state is None


async def test_a_later_attempt_of_the_same_task_takes_the_lease_over(
    session: AsyncSession, keyring: Keyring
) -> None:
    org = unique_name("org")
    attempt1 = await service.acquire_profile(session, keyring, grant(org, "t"), NOW)
    attempt2 = await service.acquire_profile(session, keyring, grant(org, "t"), NOW)
    assert attempt2.granted and attempt2.lease_token != attempt1.lease_token
    assert attempt1.lease_token is not None
    with pytest.raises(Conflict):
        await service.save_profile(
            session, keyring, grant(org, "t"), attempt1.lease_token, state_back(attempt1, "t"), NOW
        )


async def test_an_oversized_state_is_refused_naming_the_field(
    session: AsyncSession, keyring: Keyring
) -> None:
    org = unique_name("org")
    lease = await service.acquire_profile(session, keyring, grant(org, "t"), NOW)
    assert lease.lease_token
    big = {"cookies": [{"name": "x", "value": "a" * MAX_PROFILE_STATE_BYTES}]}
    with pytest.raises(Invalid) as exc:
        await service.save_profile(
            session, keyring, grant(org, "t"), lease.lease_token, state_back(lease, "t", big), NOW
        )
    assert exc.value.field == "sealed_state"


async def test_concurrent_acquires_grant_exactly_one(service_db: Database, keyring: Keyring) -> None:
    """Two real transactions race for one profile; the row lock lets exactly one win."""
    org = unique_name("org")
    gate = asyncio.Event()

    async def acquire(task: str) -> ProfileLease:
        await gate.wait()
        async with service_db.transaction() as s:
            return await service.acquire_profile(s, keyring, grant(org, task), NOW)

    racers = [asyncio.create_task(acquire(t)) for t in ("t1", "t2")]
    gate.set()
    leases = await asyncio.gather(*racers)
    assert sorted(lease.granted for lease in leases) == [False, True]
    loser = next(lease for lease in leases if not lease.granted)
    winner = next(lease for lease in leases if lease.granted)
    assert loser.held_by_task == winner.held_by_task


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not running", "not running"),
        ("other worker", "not claimed by this worker"),
        ("other profile", "does not name profile crm"),
        ("no profile", "does not name profile crm"),
    ],
)
def test_authorize_profile_refusals(case: str, message: str) -> None:
    identity = W1.identity()
    claim = ClaimInfo(task_id="t1", org_id="o1", status="running", attempt=1, worker_id="w1", secret_names=[])
    task = running_task("t1", "o1", "crm", NOW)
    if case == "not running":
        claim = claim.model_copy(update={"status": "completed"})
    elif case == "other worker":
        claim = claim.model_copy(update={"worker_id": "w2"})
    elif case == "other profile":
        task = running_task("t1", "o1", "billing", NOW)
    elif case == "no profile":
        task = running_task("t1", "o1", None, NOW)
    with pytest.raises(Forbidden) as exc:
        service.authorize_profile(identity, claim, task, "crm")
    assert message in exc.value.message
    ok = service.authorize_profile(
        identity,
        claim.model_copy(update={"status": "running", "worker_id": "w1"}),
        running_task("t1", "o1", "crm", NOW),
        "crm",
    )
    assert ok.lease_seconds == 300 + service.PROFILE_LEASE_GRACE_SECONDS


def _acquiring(w1: WorkerKeyPair, task: str) -> ProfileAcquireRequest:
    """`served`'s worker w1 asks for profile crm for `task`."""
    return ProfileAcquireRequest(
        task_id=task, worker_key="sk_worker_x", profile="crm", public_key=w1.public_key
    )


def _saving(lease: ProfileLease, sealed_state: SealedBox | None) -> ProfileSaveRequest:
    """t1's save of profile crm into `lease` (`sealed_state`: the state as w1 sealed it)."""
    assert lease.lease_token
    return ProfileSaveRequest(
        task_id="t1",
        worker_key="sk_worker_x",
        profile="crm",
        lease_token=lease.lease_token,
        sealed_state=sealed_state,
    )


@pytest.fixture
def served(rpc: RpcClient, stand: Stand) -> tuple[RpcClient, dict[str, TaskPublic], WorkerKeyPair]:
    """The vault on the real broker, with conftest's stand-ins: worker w1 (any test's key `sk_worker_x`)
    runs t1 and t2, which name profile crm, and t3, which names none, all of a new organization."""
    org = unique_name("org")
    w1 = stand.add_worker("sk_worker_x", "w1")
    for task_id, profile in (("t1", "crm"), ("t2", "crm"), ("t3", None)):
        stand.tasks[task_id] = running_task(task_id, org, profile, NOW)
        stand.claims[task_id] = running_claim(task_id, org, "w1")
    return rpc, stand.tasks, w1


async def test_profile_subjects_round_trip_and_refuse_a_task_not_naming_it(
    served: tuple[RpcClient, dict[str, TaskPublic], WorkerKeyPair],
) -> None:
    rpc, _, w1 = served

    lease = await rpc.call(endpoints.Vault.PROFILE_ACQUIRE, _acquiring(w1, "t1"))
    assert lease.granted and lease.lease_token
    busy = await rpc.call(endpoints.Vault.PROFILE_ACQUIRE, _acquiring(w1, "t2"))
    assert (busy.granted, busy.held_by_task) == (False, "t1")
    saved = await rpc.call(
        endpoints.Vault.PROFILE_SAVE,
        _saving(lease, w1.seal_state(w1.lease(lease, "t1"), "t1", STATE)),
    )
    assert saved.saved and saved.version == 1
    again = await rpc.call(endpoints.Vault.PROFILE_ACQUIRE, _acquiring(w1, "t2"))
    assert again.granted and w1.lease(again, "t2").state == STATE

    with pytest.raises(ServiceError) as exc:
        await rpc.call(endpoints.Vault.PROFILE_ACQUIRE, _acquiring(w1, "t3"))
    assert exc.value.status == 403 and exc.value.field == "profile"


async def test_list_and_delete_profiles_are_org_scoped_and_refuse_a_leased_one(
    served: tuple[RpcClient, dict[str, TaskPublic], WorkerKeyPair],
) -> None:
    rpc, tasks, w1 = served
    org = tasks["t1"].org_id

    def actor(role: str, org_id: str = org) -> Actor:
        return Actor(org_id=org_id, user_id="u1", role=role)

    async def listed(who: Actor) -> list[ProfilePublic]:
        return await rpc.call(endpoints.Vault.LIST_PROFILES, ListProfilesRequest(actor=who))

    async def delete(who: Actor, name: str = "crm") -> None:
        await rpc.call(endpoints.Vault.DELETE_PROFILE, ProfileNameRequest(actor=who, name=name))

    lease = await rpc.call(
        endpoints.Vault.PROFILE_ACQUIRE,
        _acquiring(w1, "t1"),
    )
    assert lease.granted and lease.lease_token
    size = len(json.dumps(STATE, separators=(",", ":")).encode())

    # leased: listed as in use, and an admin's delete is a 409 (the task would save it back)
    [crm] = await listed(actor("viewer"))
    assert (crm.name, crm.version, crm.size, crm.in_use) == ("crm", 0, 0, True)
    with pytest.raises(ServiceError) as exc:
        await delete(actor("admin"))
    assert (exc.value.status, exc.value.code, exc.value.field) == (409, "profile_in_use", "name")

    await rpc.call(
        endpoints.Vault.PROFILE_SAVE,
        _saving(lease, w1.seal_state(w1.lease(lease, "t1"), "t1", STATE)),
    )
    raw = await rpc.nc.request(
        endpoints.Vault.LIST_PROFILES.subject,
        ListProfilesRequest(actor=actor("viewer")).model_dump_json().encode(),
    )
    assert COOKIE.encode() not in raw.data  # the state never leaves through the list
    [crm] = await listed(actor("viewer"))
    assert (crm.version, crm.size, crm.in_use) == (1, size, False)

    # another organization sees none of it and cannot delete it: as absent as a name that exists nowhere
    other = unique_name("org")
    assert await listed(actor("admin", other)) == []
    for name in ("crm", "nowhere"):
        with pytest.raises(ServiceError) as exc:
            await delete(actor("admin", other), name)
        assert (exc.value.status, exc.value.code, exc.value.field) == (404, "profile_not_found", "name")
    # only admins delete
    with pytest.raises(ServiceError) as exc:
        await delete(actor("user"))
    assert exc.value.status == 403
    assert [p.name for p in await listed(actor("viewer"))] == ["crm"]

    await delete(actor("admin"))
    assert await listed(actor("viewer")) == []
    with pytest.raises(ServiceError) as exc:
        await delete(actor("admin"))
    assert exc.value.status == 404
    # the next task starts from an empty profile
    fresh = await rpc.call(
        endpoints.Vault.PROFILE_ACQUIRE,
        _acquiring(w1, "t2"),
    )
    assert fresh.granted and w1.lease(fresh, "t2").state is None and fresh.version == 0


async def test_a_saved_state_must_be_sealed_to_its_lease(
    served: tuple[RpcClient, dict[str, TaskPublic], WorkerKeyPair],
) -> None:
    """The state comes back sealed to the key the (sealed) lease named, for this task, attempt and worker:
    anything else is a 422 on `sealed_state` that changes nothing, and a state in clear is not accepted."""
    rpc, _, w1 = served
    lease = await rpc.call(endpoints.Vault.PROFILE_ACQUIRE, _acquiring(w1, "t1"))
    assert lease.granted and lease.lease_token
    leased = w1.lease(lease, "t1")
    state = json.dumps(STATE).encode()

    wrong = [
        (
            "to the worker's own key",
            sealing.seal(w1.public_key, state, sealing.binding("t1", 1, "w1"), purpose="profile_save"),
        ),
        (
            "for another attempt",
            sealing.seal(leased.save_key, state, sealing.binding("t1", 2, "w1"), purpose="profile_save"),
        ),
        (
            "for another worker",
            sealing.seal(leased.save_key, state, sealing.binding("t1", 1, "w2"), purpose="profile_save"),
        ),
        (
            "as a release",
            sealing.seal(leased.save_key, state, sealing.binding("t1", 1, "w1"), purpose="release"),
        ),
        (
            "not a state",
            sealing.seal(leased.save_key, b"[1, 2]", sealing.binding("t1", 1, "w1"), purpose="profile_save"),
        ),
    ]
    for case, box in wrong:
        with pytest.raises(ServiceError) as exc:
            await rpc.call(endpoints.Vault.PROFILE_SAVE, _saving(lease, box))
        assert (exc.value.status, exc.value.field) == (422, "sealed_state"), case
    clear = {**_saving(lease, wrong[0][1]).model_dump(exclude={"sealed_state"}), "state": STATE}
    with pytest.raises(ServiceError) as exc:
        await rpc.call_raw(endpoints.Vault.PROFILE_SAVE, clear)
    assert (exc.value.status, exc.value.field) == (422, "state")

    # none of that touched the lease: the real save goes through
    saved = await rpc.call(endpoints.Vault.PROFILE_SAVE, _saving(lease, w1.seal_state(leased, "t1", STATE)))
    assert (saved.saved, saved.version) == (True, 1)
    raw = await rpc.nc.request(
        endpoints.Vault.PROFILE_ACQUIRE.subject,
        _acquiring(w1, "t2").model_dump_json().encode(),
        timeout=5,
    )
    assert COOKIE.encode() not in raw.data and b"session" not in raw.data
    assert w1.lease(ProfileLease.model_validate_json(raw.data), "t2").state == STATE


async def test_a_save_survives_a_master_key_rotation_after_the_lease(session: AsyncSession) -> None:
    """The lease's save key is derived from the master key current at the lease; the vault finds it again
    by the box's recipient after the master key moved on."""
    org = unique_name("org")
    old, new = os.urandom(32), os.urandom(32)
    lease = await service.acquire_profile(session, Keyring(1, {1: old}), grant(org, "t"), NOW)
    assert lease.lease_token
    rotated = Keyring(2, {1: old, 2: new})
    saved = await service.save_profile(
        session, rotated, grant(org, "t"), lease.lease_token, state_back(lease, "t"), NOW
    )
    assert saved.saved
    again = await service.acquire_profile(session, rotated, grant(org, "t2"), NOW)
    assert W1.lease(again, "t2").state == STATE
