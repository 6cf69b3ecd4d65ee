"""Worker-gateway logic against the real PostgreSQL schema, each test rolled back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from browserfleet_contracts.common import Actor
from browserfleet_contracts.workers import Heartbeat, InviteCreate, RegisterRequest
from browserfleet_core.db import utcnow
from browserfleet_core.errors import Forbidden, Unauthorized
from browserfleet_core.security import hash_token
from browserfleet_core.testing import unique_name
from browserfleet_worker_gateway import repository, service
from browserfleet_worker_gateway.models import WorkerInvite
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

OFFLINE_AFTER = 15.0


def admin(org: str) -> Actor:
    return Actor(org_id=org, user_id="u1", role="admin")


async def _register(session: AsyncSession, actor: Actor | None, name: str = "w") -> tuple[str, str]:
    invite = await service.create_invite(session, actor, InviteCreate(tags=["eu"]))
    reply = await service.register(session, RegisterRequest(invite_code=invite.code, name=name, tags=["gpu"]))
    return reply.worker_id, reply.worker_key


async def test_invite_registers_exactly_once(session: AsyncSession) -> None:
    org = unique_name("org")
    invite = await service.create_invite(session, admin(org), InviteCreate(tags=["eu", "eu"]))
    assert invite.code.startswith("inv_") and invite.tags == ["eu"]
    stored = (await session.exec(select(WorkerInvite).where(WorkerInvite.org_id == org))).one()
    assert stored.code_hash == hash_token(invite.code) and invite.code not in stored.code_hash
    reply = await service.register(session, RegisterRequest(invite_code=invite.code, name="w1", tags=["gpu"]))
    assert reply.worker_key.startswith("sk_worker_") and reply.pool == "default"
    identity = await service.authenticate(session, reply.worker_key)
    assert identity.worker_id == reply.worker_id and identity.org_id == org
    assert identity.tags == ["eu", "gpu"]
    with pytest.raises(Unauthorized, match="invalid, used or expired") as exc:
        await service.register(session, RegisterRequest(invite_code=invite.code, name="w2"))
    assert exc.value.field == "invite_code"


async def test_expired_and_unknown_invites_are_refused(session: AsyncSession) -> None:
    org = unique_name("org")
    invite = await service.create_invite(session, admin(org), InviteCreate())
    await session.exec(
        update(WorkerInvite)
        .where(col(WorkerInvite.code_hash) == hash_token(invite.code))
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    with pytest.raises(Unauthorized):
        await service.register(session, RegisterRequest(invite_code=invite.code, name="late"))
    with pytest.raises(Unauthorized):
        await service.register(session, RegisterRequest(invite_code="inv_nope", name="guess"))


async def test_only_admins_invite_and_platform_invites_have_no_org(session: AsyncSession) -> None:
    with pytest.raises(Forbidden):
        await service.create_invite(session, Actor(org_id="o", role="user"), InviteCreate())
    worker_id, key = await _register(session, None)
    identity = await service.authenticate(session, key)
    assert identity.worker_id == worker_id and identity.org_id is None


async def test_heartbeat_and_presence_states(session: AsyncSession) -> None:
    org = unique_name("org")
    worker_id, key = await _register(session, admin(org))

    async def state() -> str:
        workers = await service.list_workers(session, admin(org), offline_after_seconds=OFFLINE_AFTER)
        return next(w.state for w in workers if w.id == worker_id)

    assert await state() == "offline"  # never seen
    await service.heartbeat(session, Heartbeat(worker_key=key))
    assert await state() == "online"
    await service.heartbeat(session, Heartbeat(worker_key=key, busy=True, running_tasks=2, slots=4))
    assert await state() == "busy"
    await repository.set_last_seen(session, worker_id, utcnow() - timedelta(seconds=OFFLINE_AFTER + 5))
    assert await state() == "offline"


async def test_list_is_scoped_to_org_plus_platform_workers(session: AsyncSession) -> None:
    org_a, org_b = unique_name("org"), unique_name("org")
    mine, _ = await _register(session, admin(org_a), "mine")
    theirs, _ = await _register(session, admin(org_b), "theirs")
    platform, _ = await _register(session, None, "platform")
    ids = {
        w.id for w in await service.list_workers(session, admin(org_a), offline_after_seconds=OFFLINE_AFTER)
    }
    assert mine in ids and platform in ids
    assert theirs not in ids


async def test_unknown_key_is_unauthorized(session: AsyncSession) -> None:
    with pytest.raises(Unauthorized):
        await service.authenticate(session, "sk_worker_nope")
    with pytest.raises(Unauthorized):
        await service.heartbeat(session, Heartbeat(worker_key="sk_worker_nope"))
