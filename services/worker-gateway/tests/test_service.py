"""Worker-gateway logic against the real PostgreSQL schema, each test rolled back: invites (one-time and pool),
registration, presence and its events, the worker's own status, drain, revoke, deregister, the pool registry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from browserfleet_contracts import bus, subjects
from browserfleet_contracts.common import Actor, ById
from browserfleet_contracts.events import EventEnvelope
from browserfleet_contracts.workers import (
    DeregisterRequest,
    DeviceInfo,
    Heartbeat,
    InviteCreate,
    RegisterReply,
    RegisterRequest,
    RotateKeyRequest,
    WorkerStatusRequest,
)
from browserfleet_core.db import Database, utcnow
from browserfleet_core.errors import Forbidden, Invalid, NotFound, Unauthorized
from browserfleet_core.outbox import OutboxRelay
from browserfleet_core.security import hash_token
from browserfleet_devkit.testing import unique_name
from browserfleet_worker_gateway import callout, invites, lifecycle, pools, presence, registration, repository
from browserfleet_worker_gateway.models import Worker, WorkerInvite, outbox
from sqlalchemy import func, select, text, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

OFFLINE_AFTER = 15.0
KEY_A = "A" * 43
KEY_B = "B" * 42 + "A"


def admin(org: str) -> Actor:
    return Actor(org_id=org, user_id="u1", role="admin")


@pytest.fixture
def relay(service_db: Any) -> OutboxRelay:
    """Not started: what is enqueued stays in the (rolled back) outbox table for the test to read."""
    return OutboxRelay(service_db, outbox)


async def _register(
    session: AsyncSession, actor: Actor | None, name: str = "w", **invite: Any
) -> RegisterReply:
    made = await invites.create_invite(session, actor, InviteCreate(tags=["eu"], **invite))
    return await registration.register(
        session, RegisterRequest(invite_code=made.code, name=name, tags=["gpu"], public_key=KEY_A)
    )


async def _events(session: AsyncSession, worker_id: str) -> list[tuple[str, EventEnvelope]]:
    rows = (
        await session.execute(
            select(outbox.c.subject, outbox.c.payload)
            .where(outbox.c.msg_id.like(f"{worker_id}:%"))
            .order_by(outbox.c.id)
        )
    ).all()
    return [(r.subject, EventEnvelope.model_validate_json(r.payload)) for r in rows]


async def _workers(session: AsyncSession, org: str) -> int:
    return int((await session.execute(select(func.count()).where(col(Worker.org_id) == org))).scalar_one())


# --- invites and registration ---------------------------------------------------------------------------
async def test_one_time_invite_registers_exactly_once(session: AsyncSession) -> None:
    org = unique_name("org")
    invite = await invites.create_invite(session, admin(org), InviteCreate(tags=["eu", "eu"]))
    assert invite.code.startswith("inv_") and invite.invite_code == invite.code and invite.tags == ["eu"]
    stored = (
        (await session.execute(select(WorkerInvite).where(col(WorkerInvite.org_id) == org))).scalars().one()
    )
    assert stored.code_hash == hash_token(invite.code) and invite.code not in stored.code_hash
    reply = await registration.register(
        session,
        RegisterRequest(
            invite_code=invite.code,
            device_info=DeviceInfo(hostname="laptop-1", platform="darwin", version="1.0.0"),
            public_key=KEY_A,
        ),
    )
    assert reply.worker_key.startswith("sk_worker_") and reply.api_key == reply.worker_key
    assert reply.pool == subjects.pool_key("default", org) and reply.pool_name == "default"
    identity = await registration.authenticate(session, reply.worker_key)
    assert identity.worker_id == reply.worker_id and identity.org_id == org
    assert identity.public_key == KEY_A and identity.pool == reply.pool
    with pytest.raises(Unauthorized, match="already used") as exc:
        await registration.register(session, RegisterRequest(invite_code=invite.code, name="w2"))
    assert exc.value.field == "invite_code"
    assert await _workers(session, org) == 1, "a refused registration creates nothing"


async def test_a_registration_repeated_after_its_reply_was_lost_gets_the_same_worker(
    session: AsyncSession, relay: OutboxRelay
) -> None:
    """The worker repeats its registration when the reply did not come in time (the first one may have
    committed): the same invite with the same public key is the same registration, answered the same."""
    org = unique_name("org")
    kinds: tuple[dict[str, Any], ...] = ({}, {"multi_use": True, "max_uses": 1})
    for kind in kinds:
        invite = await invites.create_invite(session, admin(org), InviteCreate(**kind))
        request = RegisterRequest(invite_code=invite.code, name="w", public_key=KEY_A)
        first = await registration.register(session, request)
        again = await registration.register(session, request)
        assert again == first, kind
        assert (await registration.authenticate(session, again.worker_key)).worker_id == first.worker_id
        stored = await session.get(Worker, first.worker_id)
        assert stored is not None and stored.key_hash == hash_token(first.worker_key)
        assert stored.key_nonce is not None
        used = await repository.invite_by_hash(session, hash_token(invite.code))
        assert used is not None and used.uses == 1, "a repetition uses nothing up"

        # an invite is single-use: another key pair (another process, a leaked code) is refused
        with pytest.raises(Unauthorized, match="already used"):
            await registration.register(session, request.model_copy(update={"public_key": KEY_B}))
        with pytest.raises(Unauthorized, match="already used"):
            await registration.register(session, request.model_copy(update={"public_key": None}))
        with pytest.raises(Unauthorized, match="already used"):
            await registration.register(session, request, now=utcnow() + registration.REPEAT_WINDOW)
    assert await _workers(session, org) == 2

    # once the worker used its key (its first beat), nothing repeats its registration any more
    invite = await invites.create_invite(session, admin(org), InviteCreate())
    request = RegisterRequest(invite_code=invite.code, public_key=KEY_A)
    first = await registration.register(session, request)
    await presence.heartbeat(session, relay, Heartbeat(worker_key=first.worker_key))
    stored = await session.get(Worker, first.worker_id, populate_existing=True)
    assert stored is not None and stored.key_nonce is None
    with pytest.raises(Unauthorized, match="already used"):
        await registration.register(session, request)

    # a worker removed since is not made again, nor given a new identity (a pool invite would allow one)
    for kind in ({}, {"multi_use": True}):
        invite = await invites.create_invite(session, admin(org), InviteCreate(**kind))
        request = RegisterRequest(invite_code=invite.code, public_key=KEY_A)
        first = await registration.register(session, request)
        await lifecycle.revoke(session, relay, ById(actor=admin(org), id=first.worker_id))
        with pytest.raises(Unauthorized, match="was removed"):
            await registration.register(session, request)
    # nor by a revoked invite
    invite = await invites.create_invite(session, admin(org), InviteCreate(multi_use=True))
    request = RegisterRequest(invite_code=invite.code, public_key=KEY_A)
    await registration.register(session, request)
    await invites.revoke_invite(session, ById(actor=admin(org), id=invite.id))
    with pytest.raises(Unauthorized, match="revoked"):
        await registration.register(session, request)
    assert await _workers(session, org) == 6


async def test_a_registrant_may_reconnect_to_repeat_its_registration(
    session: AsyncSession, relay: OutboxRelay
) -> None:
    """The bus's callout lets a used invite's registrant in again while its registration may be repeated
    (a connection dropped with the reply), and not once the worker used its key, nor later, nor revoked."""
    org = unique_name("org")

    async def admitted(code: str, now: datetime | None = None) -> bool:
        return (await callout.decide(session, code, now)).name == bus.REGISTRANT

    invite = await invites.create_invite(session, admin(org), InviteCreate())
    assert await admitted(invite.code)
    no_key = await registration.register(session, RegisterRequest(invite_code=invite.code))
    assert not await admitted(invite.code), "nothing repeats a registration without a public key"
    await presence.heartbeat(session, relay, Heartbeat(worker_key=no_key.worker_key))

    invite = await invites.create_invite(session, admin(org), InviteCreate())
    first = await registration.register(session, RegisterRequest(invite_code=invite.code, public_key=KEY_A))
    assert await admitted(invite.code)
    assert not await admitted(invite.code, utcnow() + registration.REPEAT_WINDOW)
    await presence.heartbeat(session, relay, Heartbeat(worker_key=first.worker_key))
    assert not await admitted(invite.code)

    for revoke in ("worker", "invite"):
        invite = await invites.create_invite(session, admin(org), InviteCreate())
        first = await registration.register(
            session, RegisterRequest(invite_code=invite.code, public_key=KEY_A)
        )
        if revoke == "worker":
            await lifecycle.revoke(session, relay, ById(actor=admin(org), id=first.worker_id))
        else:
            await invites.revoke_invite(session, ById(actor=admin(org), id=invite.id))
        assert not await admitted(invite.code), revoke


async def test_a_repetition_waits_for_the_first_registrations_commit(service_db: Database) -> None:
    """The reply may be late because the first registration has not committed yet: its repetition waits for
    the commit on the invite's row, then finds its worker (not 'already used', nor a second pool worker)."""
    org = unique_name("org")
    try:
        for kind in ({}, {"multi_use": True}):
            invite = await service_db.run(invites.create_invite, admin(org), InviteCreate(**kind))
            request = RegisterRequest(invite_code=invite.code, public_key=KEY_A)
            async with service_db.transaction() as first_tx:
                first = await registration.register(first_tx, request)
                repeat = asyncio.create_task(service_db.run(registration.register, request))
                async with asyncio.timeout(30):  # hang protection only
                    while not await _waiting_on_a_lock(service_db):
                        assert not repeat.done(), repeat.result()
                        await asyncio.sleep(0.01)
            assert await repeat == first, kind
        async with service_db.transaction() as check:
            assert await _workers(check, org) == 2
    finally:
        await service_db.run(repository.purge_org, org)


async def _waiting_on_a_lock(db: Database) -> bool:
    async with db.transaction() as s:
        stmt = text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND query ILIKE '%worker_invites%'"
        )
        return bool((await s.execute(stmt)).scalar_one())


async def test_the_seeds_invite_names_its_worker(session: AsyncSession) -> None:
    org = unique_name("org")
    invite = await invites.create_invite(
        session,
        admin(org),
        InviteCreate(name="Marketing Team Worker", capabilities=["web-automation", "data-extraction"]),
    )
    assert invite.tags == ["data-extraction", "web-automation"]
    reply = await registration.register(
        session,
        RegisterRequest(
            invite_code=invite.code, device_info=DeviceInfo(hostname="marketing-laptop-01", platform="darwin")
        ),
    )
    (worker,) = [
        w for w in await presence.list_workers(session, admin(org), offline_after_seconds=1) if w.org_id
    ]
    assert (worker.id, worker.name, worker.tags) == (
        reply.worker_id,
        "Marketing Team Worker",
        ["data-extraction", "web-automation"],
    )
    assert worker.device_info == DeviceInfo(hostname="marketing-laptop-01", platform="darwin")


async def test_a_pool_invite_gives_each_replica_an_identity_of_its_own(session: AsyncSession) -> None:
    org = unique_name("org")
    made = await invites.create_invite(
        session, admin(org), InviteCreate(pool="gpu", tags=["gpu"], multi_use=True, max_uses=2)
    )
    replicas = [
        await registration.register(
            session,
            RegisterRequest(
                invite_code=made.code, device_info=DeviceInfo(hostname=f"pod-{i}"), public_key=key
            ),
        )
        for i, key in enumerate((KEY_A, KEY_B))
    ]
    assert len({r.worker_id for r in replicas}) == 2 and len({r.worker_key for r in replicas}) == 2
    assert {r.pool for r in replicas} == {f"gpu_{org}"}
    listed = await presence.list_workers(session, admin(org), offline_after_seconds=1)
    assert sorted(w.name for w in listed if w.org_id == org) == ["pod-0", "pod-1"]
    with pytest.raises(Unauthorized, match="already used"):  # max_uses=2
        await registration.register(session, RegisterRequest(invite_code=made.code, name="third"))
    (info,) = [i for i in await invites.list_invites(session, admin(org)) if i.id == made.id]
    assert (info.uses, info.status, info.multi_use) == (2, "used", True)


async def test_revoked_expired_and_unknown_invites_are_refused_and_create_nothing(
    session: AsyncSession,
) -> None:
    org = unique_name("org")
    pool_invite = await invites.create_invite(session, admin(org), InviteCreate(multi_use=True))
    await registration.register(session, RegisterRequest(invite_code=pool_invite.code, name="before"))
    revoked = await invites.revoke_invite(session, ById(actor=admin(org), id=pool_invite.id))
    assert revoked.status == "revoked"
    with pytest.raises(Unauthorized, match="revoked"):
        await registration.register(session, RegisterRequest(invite_code=pool_invite.code, name="after"))
    late = await invites.create_invite(session, admin(org), InviteCreate(multi_use=True))
    await session.exec(
        update(WorkerInvite)
        .where(col(WorkerInvite.code_hash) == hash_token(late.code))
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    with pytest.raises(Unauthorized, match="expired"):
        await registration.register(session, RegisterRequest(invite_code=late.code, name="late"))
    with pytest.raises(Unauthorized, match="unknown invite"):
        await registration.register(session, RegisterRequest(invite_code="inv_nope", name="guess"))
    assert await _workers(session, org) == 1
    with pytest.raises(NotFound):  # another org's invite
        await invites.revoke_invite(session, ById(actor=admin(unique_name("org")), id=late.id))


async def test_invite_rules(session: AsyncSession) -> None:
    with pytest.raises(Forbidden):
        await invites.create_invite(session, Actor(org_id="o", role="user"), InviteCreate())
    with pytest.raises(Forbidden):
        await invites.list_invites(session, Actor(org_id="o", role="viewer"))
    too_far = datetime.now(UTC) + timedelta(days=400)
    with pytest.raises(Invalid) as exc:
        await invites.create_invite(session, admin("o"), InviteCreate(expires_at=too_far))
    assert exc.value.field == "invite.expires_at"
    platform = await _register(session, None, "platform", pool="shared")
    identity = await registration.authenticate(session, platform.worker_key)
    assert identity.org_id is None and identity.pool == "shared"


async def test_the_configured_pool_invite_follows_the_setting(session: AsyncSession) -> None:
    first, second = "inv_" + "a" * 40, "inv_" + "b" * 40
    await invites.ensure_configured(session, first, "default")
    await invites.ensure_configured(session, first, "default")  # a restart: the same invite, renewed
    one = await registration.register(session, RegisterRequest(invite_code=first, name="r1"))
    two = await registration.register(session, RegisterRequest(invite_code=first, name="r2"))
    assert one.worker_id != two.worker_id and one.pool == "default" and one.org_id is None
    await invites.ensure_configured(session, second, "default")
    with pytest.raises(Unauthorized, match="revoked"):
        await registration.register(session, RegisterRequest(invite_code=first, name="r3"))
    await registration.register(session, RegisterRequest(invite_code=second, name="r3"))
    # a replica without the setting leaves the configured invite alone
    await invites.ensure_configured(session, None, "default")
    await registration.register(session, RegisterRequest(invite_code=second, name="r4"))


async def test_rotating_the_public_key(session: AsyncSession) -> None:
    reply = await _register(session, admin(unique_name("org")))
    identity = await registration.rotate_key(
        session, RotateKeyRequest(worker_key=reply.worker_key, public_key=KEY_B)
    )
    assert identity.public_key == KEY_B
    assert (await registration.authenticate(session, reply.worker_key)).public_key == KEY_B
    with pytest.raises(Unauthorized):
        await registration.rotate_key(
            session, RotateKeyRequest(worker_key="sk_worker_nope", public_key=KEY_A)
        )


# --- presence and its events -----------------------------------------------------------------------------
async def test_heartbeats_and_silence_are_announced_once_each(
    session: AsyncSession, relay: OutboxRelay
) -> None:
    org = unique_name("org")
    reply = await _register(session, admin(org))
    wid = reply.worker_id

    async def status() -> str:
        workers = await presence.list_workers(session, admin(org), offline_after_seconds=OFFLINE_AFTER)
        return next(w.status for w in workers if w.id == wid)

    assert await status() == "offline"  # never seen
    assert not (await presence.heartbeat(session, relay, Heartbeat(worker_key=reply.worker_key))).drain
    await presence.heartbeat(
        session, relay, Heartbeat(worker_key=reply.worker_key, busy=True, running_tasks=1)
    )
    assert await status() == "busy"
    assert [e.type for _, e in await _events(session, wid)] == ["worker.online"], "one event per change"

    last_seen = utcnow() - timedelta(seconds=OFFLINE_AFTER + 5)
    await repository.set_last_seen(session, wid, last_seen)
    assert await presence.sweep_offline(session, relay, offline_after_seconds=OFFLINE_AFTER) >= 1
    assert await presence.sweep_offline(session, relay, offline_after_seconds=OFFLINE_AFTER) == 0
    assert await status() == "offline"
    subject, offline = (await _events(session, wid))[-1]
    assert subject == f"events.{org}.worker.offline" and offline.id == f"{wid}:offline:2"
    # the seed's payload
    assert (offline.data["worker_id"], offline.data["worker_name"]) == (wid, "w")
    assert datetime.fromisoformat(offline.data["last_seen"]) == last_seen
    await presence.heartbeat(session, relay, Heartbeat(worker_key=reply.worker_key))
    assert [e.id for _, e in await _events(session, wid)] == [
        f"{wid}:online:1",
        f"{wid}:offline:2",
        f"{wid}:online:3",
    ]


async def test_a_platform_workers_events_are_the_platforms(session: AsyncSession, relay: OutboxRelay) -> None:
    reply = await _register(session, None)
    await presence.heartbeat(session, relay, Heartbeat(worker_key=reply.worker_key))
    ((subject, event),) = await _events(session, reply.worker_id)
    assert subject == "events.platform.worker.online" and event.org_id == subjects.PLATFORM_EVENTS_ORG


async def test_a_worker_reports_its_own_status_only(session: AsyncSession, relay: OutboxRelay) -> None:
    org = unique_name("org")
    me, other = await _register(session, admin(org), "me"), await _register(session, admin(org), "other")

    def report(status: str, worker_id: str = me.worker_id, **extra: Any) -> WorkerStatusRequest:
        return WorkerStatusRequest.model_validate(
            {"worker_key": me.worker_key, "worker_id": worker_id, "status": status, **extra}
        )

    with pytest.raises(NotFound):
        await presence.report_status(
            session, relay, report("error", other.worker_id), offline_after_seconds=15
        )
    shown = await presence.report_status(
        session, relay, report("error", detail="chromium crashed at start"), offline_after_seconds=15
    )
    assert (shown.status, shown.status_detail) == ("error", "chromium crashed at start")
    assert (
        await presence.report_status(session, relay, report("online"), offline_after_seconds=15)
    ).status == "online"
    shown = await presence.report_status(session, relay, report("draining"), offline_after_seconds=15)
    assert shown.status == "draining"
    assert (
        await presence.report_status(session, relay, report("offline"), offline_after_seconds=15)
    ).status == "offline"
    assert [e.type for _, e in await _events(session, me.worker_id)] == [
        "worker.online",
        "worker.draining",
        "worker.offline",
    ]
    assert await _events(session, other.worker_id) == []


# --- drain, revoke, deregister ---------------------------------------------------------------------------
async def test_drain_is_an_admins_for_the_orgs_own_workers(session: AsyncSession, relay: OutboxRelay) -> None:
    org = unique_name("org")
    reply, platform = await _register(session, admin(org)), await _register(session, None)
    await presence.heartbeat(session, relay, Heartbeat(worker_key=reply.worker_key))
    for who, worker_id, error in (
        (Actor(org_id=org, role="viewer"), reply.worker_id, Forbidden),
        (Actor(org_id=org, role="user"), reply.worker_id, Forbidden),
        (admin(unique_name("org")), reply.worker_id, NotFound),
        (admin(org), platform.worker_id, NotFound),
    ):
        with pytest.raises(error):
            await lifecycle.drain(session, relay, ById(actor=who, id=worker_id), offline_after_seconds=15)
    for _ in range(2):
        shown = await lifecycle.drain(
            session, relay, ById(actor=admin(org), id=reply.worker_id), offline_after_seconds=15
        )
        assert shown.status == "draining"
    assert [e.type for _, e in await _events(session, reply.worker_id)] == [
        "worker.online",
        "worker.draining",
    ]
    assert (await presence.heartbeat(session, relay, Heartbeat(worker_key=reply.worker_key))).drain
    await registration.rotate_key(session, RotateKeyRequest(worker_key=reply.worker_key, public_key=KEY_B))
    assert not (await presence.heartbeat(session, relay, Heartbeat(worker_key=reply.worker_key))).drain


async def test_revoke_kills_the_key_at_once(session: AsyncSession, relay: OutboxRelay) -> None:
    org = unique_name("org")
    reply = await _register(session, admin(org))
    with pytest.raises(Forbidden):
        await lifecycle.revoke(
            session, relay, ById(actor=Actor(org_id=org, role="viewer"), id=reply.worker_id)
        )
    with pytest.raises(NotFound):
        await lifecycle.revoke(session, relay, ById(actor=admin(unique_name("org")), id=reply.worker_id))
    assert (await registration.authenticate(session, reply.worker_key)).worker_id == reply.worker_id
    gone = await lifecycle.revoke(session, relay, ById(actor=admin(org), id=reply.worker_id))
    assert gone.id == reply.worker_id
    with pytest.raises(Unauthorized, match="removed") as exc:
        await registration.authenticate(session, reply.worker_key)
    assert exc.value.code == "worker_revoked"
    with pytest.raises(Unauthorized):
        await presence.heartbeat(session, relay, Heartbeat(worker_key=reply.worker_key))
    ((subject, event),) = await _events(session, reply.worker_id)
    assert subject == f"events.{org}.worker.revoked" and event.id == f"{reply.worker_id}:revoked"
    assert reply.worker_id not in {
        w.id for w in await presence.list_workers(session, admin(org), offline_after_seconds=15)
    }
    with pytest.raises(NotFound):  # already gone
        await lifecycle.revoke(session, relay, ById(actor=admin(org), id=reply.worker_id))


async def test_deregister_removes_the_worker_and_says_it_went_offline(
    session: AsyncSession, relay: OutboxRelay
) -> None:
    org = unique_name("org")
    me, other = await _register(session, admin(org)), await _register(session, admin(org))
    await presence.heartbeat(session, relay, Heartbeat(worker_key=me.worker_key))
    with pytest.raises(NotFound):
        await registration.deregister(
            session, relay, DeregisterRequest(worker_key=me.worker_key, worker_id=other.worker_id)
        )
    await registration.deregister(
        session, relay, DeregisterRequest(worker_key=me.worker_key, worker_id=me.worker_id)
    )
    with pytest.raises(Unauthorized):
        await registration.authenticate(session, me.worker_key)
    assert [e.type for _, e in await _events(session, me.worker_id)] == ["worker.online", "worker.offline"]
    assert (await registration.authenticate(session, other.worker_key)).worker_id == other.worker_id


# --- the pool registry ------------------------------------------------------------------------------------
async def test_the_registry_has_each_pool_once_with_the_tags_all_its_workers_have(
    session: AsyncSession, relay: OutboxRelay
) -> None:
    org = unique_name("org")
    made = await invites.create_invite(
        session, admin(org), InviteCreate(pool="fast", tags=["eu"], multi_use=True)
    )
    a = await registration.register(session, RegisterRequest(invite_code=made.code, name="a", tags=["gpu"]))
    await registration.register(
        session, RegisterRequest(invite_code=made.code, name="b", tags=["gpu", "ssd"])
    )
    await registration.register(session, RegisterRequest(invite_code=made.code, name="c", tags=["gpu"]))
    await presence.heartbeat(session, relay, Heartbeat(worker_key=a.worker_key))
    shared = await _register(session, None, pool=f"p{unique_name('x')[-6:]}")
    registry = {p.key: p for p in await pools.registry(session, offline_after_seconds=15)}
    mine = registry[f"fast_{org}"]
    assert (mine.name, mine.org_id, mine.tags, mine.workers, mine.online) == (
        "fast",
        org,
        ["eu", "gpu"],
        3,
        1,
    )
    platform = registry[shared.pool]
    assert platform.org_id is None and platform.tags == ["eu", "gpu"]
    await lifecycle.revoke(session, relay, ById(actor=admin(org), id=a.worker_id))
    assert {p.key: p.workers for p in await pools.registry(session, offline_after_seconds=15)}[
        f"fast_{org}"
    ] == 2
