"""Browser profiles: encrypted storage states and the lease that keeps two tasks from clobbering one.

Service logic against the real PostgreSQL schema (rolled back), two real concurrent transactions for the
row lock, and the subjects over the real NATS server with the scheduler and worker-gateway stood in by
small in-test responders (other services; this package must not import them).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from browserfleet_contracts import subjects
from browserfleet_contracts.common import Ack, Actor
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
from browserfleet_contracts.tasks import ClaimInfo, GetTaskRequest, TaskPublic, TaskSpec
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core.db import Database
from browserfleet_core.errors import Conflict, Forbidden, Invalid, NotFound, ServiceError
from browserfleet_core.messaging import ERROR_HEADER, RpcClient
from browserfleet_core.testing import unique_name
from browserfleet_vault import crypto, repository, service
from browserfleet_vault.app import create_context
from browserfleet_vault.crypto import Keyring
from browserfleet_vault.settings import VaultSettings
from nats.aio.msg import Msg
from sqlmodel.ext.asyncio.session import AsyncSession

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
COOKIE = "session-cookie-value-Zx81"
STATE: dict[str, Any] = {
    "cookies": [{"name": "session", "value": COOKIE, "domain": "127.0.0.1", "path": "/"}],
    "origins": [{"origin": "http://127.0.0.1", "localStorage": [{"name": "k", "value": "v"}]}],
}


def grant(org: str, task: str, profile: str = "crm", lease: float = 60) -> service.ProfileGrant:
    return service.ProfileGrant(
        task_id=task, org_id=org, worker_id="w1", profile=profile, lease_seconds=lease
    )


async def test_round_trip_is_encrypted_and_binds_the_name(session: AsyncSession, keyring: Keyring) -> None:
    org = unique_name("org")
    first = await service.acquire_profile(session, keyring, grant(org, "t1"), NOW)
    assert first.granted and first.state is None and first.version == 0 and first.lease_token
    saved = await service.save_profile(session, keyring, grant(org, "t1"), first.lease_token, STATE, NOW)
    assert saved == ProfileSaveReply(saved=True, version=1)

    row = await repository.get_profile(session, org, "crm")
    assert row is not None and row.ciphertext is not None and row.nonce is not None
    assert COOKIE.encode() not in row.ciphertext and row.lease_token is None

    second = await service.acquire_profile(session, keyring, grant(org, "t2"), NOW)
    assert second.granted and second.state == STATE and second.version == 1

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
        await service.save_profile(session, keyring, grant(org, "task-a"), a.lease_token, {"x": 1}, NOW)
    assert exc.value.code == "profile_lease_lost" and exc.value.field == "lease_token"
    # b ends its lease without saving (its task failed): the stored state is unchanged, the next task runs
    assert await service.save_profile(
        session, keyring, grant(org, "task-b"), b.lease_token, None, NOW
    ) == ProfileSaveReply(saved=False, version=0)
    c = await service.acquire_profile(session, keyring, grant(org, "task-c"), NOW + timedelta(seconds=62))
    assert c.granted and c.state is None


async def test_a_later_attempt_of_the_same_task_takes_the_lease_over(
    session: AsyncSession, keyring: Keyring
) -> None:
    org = unique_name("org")
    attempt1 = await service.acquire_profile(session, keyring, grant(org, "t"), NOW)
    attempt2 = await service.acquire_profile(session, keyring, grant(org, "t"), NOW)
    assert attempt2.granted and attempt2.lease_token != attempt1.lease_token
    assert attempt1.lease_token is not None
    with pytest.raises(Conflict):
        await service.save_profile(session, keyring, grant(org, "t"), attempt1.lease_token, STATE, NOW)


async def test_an_oversized_state_is_refused_naming_the_field(
    session: AsyncSession, keyring: Keyring
) -> None:
    org = unique_name("org")
    lease = await service.acquire_profile(session, keyring, grant(org, "t"), NOW)
    assert lease.lease_token
    big = {"cookies": [{"name": "x", "value": "a" * MAX_PROFILE_STATE_BYTES}]}
    with pytest.raises(Invalid) as exc:
        await service.save_profile(session, keyring, grant(org, "t"), lease.lease_token, big, NOW)
    assert exc.value.field == "state"


async def test_concurrent_acquires_grant_exactly_one(vault_db: Database, keyring: Keyring) -> None:
    """Two real transactions race for one profile; the row lock lets exactly one win."""
    org = unique_name("org")
    gate = asyncio.Event()

    async def acquire(task: str) -> ProfileLease:
        await gate.wait()
        async with vault_db.transaction() as s:
            return await service.acquire_profile(s, keyring, grant(org, task), NOW)

    racers = [asyncio.create_task(acquire(t)) for t in ("t1", "t2")]
    gate.set()
    leases = await asyncio.gather(*racers)
    assert sorted(lease.granted for lease in leases) == [False, True]
    loser = next(lease for lease in leases if not lease.granted)
    winner = next(lease for lease in leases if lease.granted)
    assert loser.held_by_task == winner.held_by_task


def _task(task_id: str, org: str, profile: str | None) -> TaskPublic:
    return TaskPublic(
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
        created_at=NOW,
        updated_at=NOW,
    )


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
    identity = WorkerIdentity(worker_id="w1", org_id=None, name="w", tags=[])
    claim = ClaimInfo(task_id="t1", org_id="o1", status="running", attempt=1, worker_id="w1", secret_names=[])
    task = _task("t1", "o1", "crm")
    if case == "not running":
        claim = claim.model_copy(update={"status": "completed"})
    elif case == "other worker":
        claim = claim.model_copy(update={"worker_id": "w2"})
    elif case == "other profile":
        task = _task("t1", "o1", "billing")
    elif case == "no profile":
        task = _task("t1", "o1", None)
    with pytest.raises(Forbidden) as exc:
        service.authorize_profile(identity, claim, task, "crm")
    assert message in exc.value.message
    ok = service.authorize_profile(
        identity,
        claim.model_copy(update={"status": "running", "worker_id": "w1"}),
        _task("t1", "o1", "crm"),
        "crm",
    )
    assert ok.lease_seconds == 300 + service.PROFILE_LEASE_GRACE_SECONDS


@pytest.fixture
async def served(
    nats_url: str, vault_settings: VaultSettings, vault_migrated: str
) -> AsyncIterator[tuple[RpcClient, dict[str, TaskPublic]]]:
    """The vault on the real broker; worker-gateway and the scheduler stood in by responders."""
    nc = await nats.connect(nats_url)
    tasks: dict[str, TaskPublic] = {}
    org = unique_name("org")

    async def authenticate(msg: Msg) -> None:
        await msg.respond(
            WorkerIdentity(worker_id="w1", org_id=None, name="w", tags=[]).model_dump_json().encode()
        )

    async def claim_info(msg: Msg) -> None:
        task_id = json.loads(msg.data)["task_id"]
        if task_id not in tasks:
            body = NotFound("task not found").body()
            await nc.publish(msg.reply, body.model_dump_json().encode(), headers={ERROR_HEADER: "404"})
            return
        info = ClaimInfo(
            task_id=task_id, org_id=org, status="running", attempt=1, worker_id="w1", secret_names=[]
        )
        await msg.respond(info.model_dump_json().encode())

    async def get_task(msg: Msg) -> None:
        req = GetTaskRequest.model_validate_json(msg.data)
        assert req.actor.org_id == org
        await msg.respond(tasks[req.task_id].model_dump_json().encode())

    subs = [
        await nc.subscribe(subjects.Workers.AUTHENTICATE, queue="stand-in", cb=authenticate),
        await nc.subscribe(subjects.Scheduler.CLAIM_INFO, queue="stand-in", cb=claim_info),
        await nc.subscribe(subjects.Scheduler.GET_TASK, queue="stand-in", cb=get_task),
    ]
    ctx = create_context(vault_settings)
    await ctx.broker.start()
    # its SUBs went out on its own connection: a PING round trip makes sure the server has them
    await ctx.broker.connection.flush()
    tasks["t1"] = _task("t1", org, "crm")
    tasks["t2"] = _task("t2", org, "crm")
    tasks["t3"] = _task("t3", org, None)
    try:
        yield RpcClient(nc, timeout=5), tasks
    finally:
        await ctx.broker.stop()
        await ctx.db.dispose()
        for sub in subs:
            await sub.unsubscribe()
        await nc.drain()


async def test_profile_subjects_round_trip_and_refuse_a_task_not_naming_it(
    served: tuple[RpcClient, dict[str, TaskPublic]],
) -> None:
    rpc, _ = served

    def acquire(task: str) -> ProfileAcquireRequest:
        return ProfileAcquireRequest(task_id=task, worker_key="sk_worker_x", profile="crm")

    lease = await rpc.call(subjects.Vault.PROFILE_ACQUIRE, acquire("t1"), ProfileLease)
    assert lease.granted and lease.lease_token
    busy = await rpc.call(subjects.Vault.PROFILE_ACQUIRE, acquire("t2"), ProfileLease)
    assert (busy.granted, busy.held_by_task) == (False, "t1")
    saved = await rpc.call(
        subjects.Vault.PROFILE_SAVE,
        ProfileSaveRequest(
            task_id="t1", worker_key="sk_worker_x", profile="crm", lease_token=lease.lease_token, state=STATE
        ),
        ProfileSaveReply,
    )
    assert saved.saved and saved.version == 1
    again = await rpc.call(subjects.Vault.PROFILE_ACQUIRE, acquire("t2"), ProfileLease)
    assert again.granted and again.state == STATE

    with pytest.raises(ServiceError) as exc:
        await rpc.call(subjects.Vault.PROFILE_ACQUIRE, acquire("t3"), ProfileLease)
    assert exc.value.status == 403 and exc.value.field == "profile"


async def test_list_and_delete_profiles_are_org_scoped_and_refuse_a_leased_one(
    served: tuple[RpcClient, dict[str, TaskPublic]],
) -> None:
    rpc, tasks = served
    org = tasks["t1"].org_id

    def actor(role: str, org_id: str = org) -> Actor:
        return Actor(org_id=org_id, user_id="u1", role=role)  # type: ignore[arg-type]

    async def listed(who: Actor) -> list[ProfilePublic]:
        return await rpc.call(
            subjects.Vault.LIST_PROFILES, ListProfilesRequest(actor=who), list[ProfilePublic]
        )

    async def delete(who: Actor, name: str = "crm") -> None:
        await rpc.call(subjects.Vault.DELETE_PROFILE, ProfileNameRequest(actor=who, name=name), Ack)

    lease = await rpc.call(
        subjects.Vault.PROFILE_ACQUIRE,
        ProfileAcquireRequest(task_id="t1", worker_key="sk_worker_x", profile="crm"),
        ProfileLease,
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
        subjects.Vault.PROFILE_SAVE,
        ProfileSaveRequest(
            task_id="t1", worker_key="sk_worker_x", profile="crm", lease_token=lease.lease_token, state=STATE
        ),
        ProfileSaveReply,
    )
    raw = await rpc.nc.request(
        subjects.Vault.LIST_PROFILES, ListProfilesRequest(actor=actor("viewer")).model_dump_json().encode()
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
        subjects.Vault.PROFILE_ACQUIRE,
        ProfileAcquireRequest(task_id="t2", worker_key="sk_worker_x", profile="crm"),
        ProfileLease,
    )
    assert fresh.granted and fresh.state is None and fresh.version == 0
