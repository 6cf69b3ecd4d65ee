"""Organizations, users, API keys, brute-force throttling and the audit log, against real PostgreSQL
(one rolled-back transaction per test); the clock is injected, nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from browserfleet_auth import api_keys, audit, organizations, sessions, users
from browserfleet_auth import repository as repo
from browserfleet_auth.config import AuthConfig
from browserfleet_auth.models import ApiKey, AuditLog, User, outbox
from browserfleet_auth.sessions import INVALID_CREDENTIALS, LoginFailed
from browserfleet_auth.throttle import BruteForcePolicy, LoginThrottled
from browserfleet_contracts.auth import (
    ApiKeyCreate,
    ListAuditRequest,
    OrganizationCreate,
    OrganizationUpdate,
    UpdateOrganizationRequest,
    UpdateUserRequest,
    UserCreate,
    UserUpdate,
)
from browserfleet_contracts.common import Actor
from browserfleet_core.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from browserfleet_core.outbox import OutboxRelay
from pydantic import ValidationError
from sqlalchemy import select as sa_select
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from .conftest import signed_in

PASSWORD = "correct horse battery staple"
HOSTILE = "'); DROP TABLE auth.users; -- <script>alert(1)</script>"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeRelay:
    """Records outbox rows in the real table through the real relay's enqueue (no JetStream needed)."""

    def __init__(self) -> None:
        self._relay = OutboxRelay.__new__(OutboxRelay)
        self._relay.table = outbox

    async def enqueue(self, session: AsyncSession, subject: str, payload: Any, msg_id: str) -> None:
        from sqlalchemy.dialects.postgresql import insert

        data = payload.model_dump_json().encode()
        await session.exec(
            insert(outbox).values(subject=subject, msg_id=msg_id, payload=data, created_at=datetime.now(UTC))
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config(clock: Clock) -> AuthConfig:
    policy = BruteForcePolicy(
        slow_after=3, max_delay_seconds=30, lock_after_account=6, lock_after_ip=8, lock_seconds=600
    )
    return AuthConfig(brute_force=policy, now=clock)


@pytest.fixture
def relay() -> OutboxRelay:
    return FakeRelay()  # type: ignore[return-value]


async def org_admin(session: AsyncSession, name: str, *, operator: bool = False) -> tuple[str, Actor, User]:
    org = await organizations.create_organization(session, name)
    admin = await users.create_user(
        session, org_id=org.id, email=f"admin@{org.slug}.example", password=PASSWORD, role="admin"
    )
    admin.platform_operator = operator
    session.add(admin)
    await session.flush()
    return org.id, Actor(org_id=org.id, user_id=admin.id, role="admin", client_ip="203.0.113.9"), admin


# --- API keys -------------------------------------------------------------------------------------
async def test_api_key_is_shown_once_stored_hashed_and_authenticates(
    session: AsyncSession, config: AuthConfig
) -> None:
    org_id, actor, _ = await org_admin(session, "Keys")
    created = await api_keys.create_api_key(
        session, config, actor, ApiKeyCreate(name="ci", scopes=["tasks:write"])
    )
    assert created.key.startswith("sk_api_") and len(created.key) >= 7 + 43  # 256 bits, base64url
    row = (await session.exec(select(ApiKey).where(ApiKey.id == created.id))).one()
    assert row.key_hash != created.key and created.key not in str(row.model_dump())
    listed = await api_keys.list_api_keys(session, actor)
    assert [k.id for k in listed] == [created.id] and "key" not in listed[0].model_dump()
    principal = await api_keys.authenticate_api_key(session, config, created.key)
    assert (principal.org_id, principal.key_id, principal.scopes, principal.plan) == (
        org_id,
        created.id,
        ["tasks:write"],
        "free",
    )
    await session.refresh(row)
    assert row.last_used_at is not None


async def test_revoked_expired_and_unknown_keys_are_401(
    session: AsyncSession, config: AuthConfig, clock: Clock
) -> None:
    _, actor, _ = await org_admin(session, "Keys2")
    expiring = await api_keys.create_api_key(
        session,
        config,
        actor,
        ApiKeyCreate(name="short", scopes=["tasks:read"], expires_at=clock.now + timedelta(hours=1)),
    )
    revoked = await api_keys.create_api_key(
        session, config, actor, ApiKeyCreate(name="gone", scopes=["tasks:read"])
    )
    await api_keys.revoke_api_key(session, config, actor, revoked.id)
    await api_keys.revoke_api_key(session, config, actor, revoked.id)  # idempotent
    await api_keys.authenticate_api_key(session, config, expiring.key)
    clock.advance(3601)
    for raw in (expiring.key, revoked.key, "sk_api_" + "A" * 43, "not-a-key"):
        with pytest.raises(Unauthorized) as err:
            await api_keys.authenticate_api_key(session, config, raw)
        assert err.value.code == "invalid_api_key"


async def test_api_key_expiry_in_the_past_is_422(
    session: AsyncSession, config: AuthConfig, clock: Clock
) -> None:
    _, actor, _ = await org_admin(session, "Keys3")
    with pytest.raises(Invalid) as err:
        await api_keys.create_api_key(
            session,
            config,
            actor,
            ApiKeyCreate(name="x", scopes=["tasks:read"], expires_at=clock.now - timedelta(1)),
        )
    assert err.value.field == "expires_at"


async def test_another_orgs_key_is_404_and_non_admins_cannot_manage_keys(
    session: AsyncSession, config: AuthConfig
) -> None:
    _, a, _ = await org_admin(session, "Org A")
    _, b, _ = await org_admin(session, "Org B")
    key = await api_keys.create_api_key(session, config, a, ApiKeyCreate(name="a", scopes=["tasks:read"]))
    with pytest.raises(NotFound):
        await api_keys.revoke_api_key(session, config, b, key.id)
    assert await api_keys.list_api_keys(session, b) == []
    await api_keys.authenticate_api_key(session, config, key.key)  # still valid
    with pytest.raises(Forbidden):
        await api_keys.create_api_key(
            session,
            config,
            a.model_copy(update={"role": "user"}),
            ApiKeyCreate(name="u", scopes=["tasks:read"]),
        )


# --- brute force ----------------------------------------------------------------------------------
async def test_failed_logins_slow_down_then_lock_with_one_message(
    session: AsyncSession, config: AuthConfig, clock: Clock
) -> None:
    _, _, admin = await org_admin(session, "Brute")
    for _ in range(3):
        with pytest.raises(LoginFailed) as failed:
            await sessions.login(session, config, admin.email, "wrong", client_ip="198.51.100.1")
        assert failed.value.message == INVALID_CREDENTIALS
    # fourth try right away: must wait 1 s (2**0), even with the right password
    with pytest.raises(LoginThrottled) as throttled:
        await sessions.login(session, config, admin.email, PASSWORD, client_ip="198.51.100.2")
    assert throttled.value.retry_after == 1 and throttled.value.status == 429
    clock.advance(1)
    with pytest.raises(LoginFailed):
        await sessions.login(session, config, admin.email, "wrong", client_ip="198.51.100.2")
    clock.advance(1)  # now 2 s are due
    with pytest.raises(LoginThrottled):
        await sessions.login(session, config, admin.email, PASSWORD)
    for delay in (2, 4):
        clock.advance(delay)
        with pytest.raises(LoginFailed):
            await sessions.login(session, config, admin.email, "wrong")
    # six failures: locked for 600 s, whatever the password
    clock.advance(60)
    with pytest.raises(LoginThrottled) as locked:
        await sessions.login(session, config, admin.email, PASSWORD)
    assert 500 < locked.value.retry_after <= 600
    # an unknown email is throttled just the same: the lock says nothing about accounts
    for _ in range(3):
        with pytest.raises(LoginFailed):
            await sessions.login(session, config, "nobody@nowhere.example", "x")
    with pytest.raises(LoginThrottled):
        await sessions.login(session, config, "nobody@nowhere.example", "x")
    clock.advance(601)
    pair = await signed_in(session, config, admin.email, PASSWORD)
    assert pair.access_token
    # success resets the account's counter
    assert await repo.get_throttles_for_update(session, [f"email:{admin.email}"]) == {}


async def test_one_address_trying_many_accounts_is_locked(
    session: AsyncSession, config: AuthConfig, clock: Clock
) -> None:
    _, _, admin = await org_admin(session, "Spray")
    for i in range(8):
        clock.advance(60)  # slower than the per-account slow-down, one account each
        with pytest.raises(LoginFailed):
            await sessions.login(session, config, f"user{i}@spray.example", "guess", client_ip="192.0.2.66")
    with pytest.raises(LoginThrottled):
        await sessions.login(session, config, admin.email, PASSWORD, client_ip="192.0.2.66")
    assert (await signed_in(session, config, admin.email, PASSWORD, client_ip="192.0.2.67")).access_token


# --- organizations --------------------------------------------------------------------------------
async def test_only_a_platform_operator_manages_organizations(
    session: AsyncSession, config: AuthConfig
) -> None:
    _, op, _ = await org_admin(session, "Operators", operator=True)
    _, admin, _ = await org_admin(session, "Tenant")
    org = await organizations.create_org(
        session, config, op, OrganizationCreate(name="New Co", slug="new-co", plan="pro")
    )
    assert (org.slug, org.plan) == ("new-co", "pro")
    with pytest.raises(Forbidden):
        await organizations.create_org(session, config, admin, OrganizationCreate(name="Nope"))
    with pytest.raises(Forbidden):
        await organizations.list_organizations(session, admin)
    with pytest.raises(NotFound):  # an id names nothing to a non-operator
        await organizations.update_org(
            session,
            config,
            UpdateOrganizationRequest(actor=admin, id=org.id, organization=OrganizationUpdate(plan="free")),
        )
    updated = await organizations.update_org(
        session,
        config,
        UpdateOrganizationRequest(
            actor=op,
            id=org.id,
            organization=OrganizationUpdate(plan="enterprise", settings={"max_concurrency": 5}),
        ),
    )
    assert (updated.plan, updated.settings) == ("enterprise", {"max_concurrency": 5})
    assert org.id in {o.id for o in await organizations.list_organizations(session, op)}


@pytest.mark.parametrize("spelling", ["ACME", "\uff41\uff43\uff4d\uff45", " Acme ", "acme"])
async def test_unicode_spellings_of_a_slug_cannot_duplicate_it(
    session: AsyncSession, config: AuthConfig, spelling: str
) -> None:
    _, op, _ = await org_admin(session, "Ops", operator=True)
    await organizations.create_org(session, config, op, OrganizationCreate(name="Acme", slug="acme"))
    with pytest.raises(Conflict) as err:
        await organizations.create_org(session, config, op, OrganizationCreate(name="Acme 2", slug=spelling))
    assert err.value.field == "slug"


@pytest.mark.parametrize("slug", ["acme\x00", "ac me", "-acme", "acmé", "acme-", "ac_me"])
async def test_bad_slugs_are_422(session: AsyncSession, config: AuthConfig, slug: str) -> None:
    _, op, _ = await org_admin(session, "Ops", operator=True)
    with pytest.raises(Invalid) as err:
        await organizations.create_org(session, config, op, OrganizationCreate(name="x", slug=slug))
    assert err.value.field == "slug"


async def test_deleting_an_organization_removes_users_and_keys_and_emits_an_event(
    session: AsyncSession, config: AuthConfig, relay: OutboxRelay
) -> None:
    _, op, _ = await org_admin(session, "Ops", operator=True)
    victim_id, victim, victim_admin = await org_admin(session, "Victim")
    await api_keys.create_api_key(session, config, victim, ApiKeyCreate(name="k", scopes=["tasks:read"]))
    with pytest.raises(Conflict):
        await organizations.delete_org(session, config, relay, op, op.org_id)
    await organizations.delete_org(session, config, relay, op, victim_id)
    assert await repo.get_organization(session, victim_id) is None
    assert (await session.exec(select(User).where(User.id == victim_admin.id))).all() == []
    assert (await session.exec(select(ApiKey).where(ApiKey.org_id == victim_id))).all() == []
    rows = (await session.execute(sa_select(outbox.c.subject, outbox.c.msg_id))).all()
    assert (f"events.{victim_id}.organization.deleted", f"{victim_id}:organization.deleted") in [
        tuple(r) for r in rows
    ]
    actions = (await session.exec(select(AuditLog.action).where(AuditLog.target == victim_id))).all()
    assert "organization.deleted" in actions


# --- users ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spelling", ["BOB@EXAMPLE.COM", "\uff42\uff4f\uff42@example.com", " bob@example.com "]
)
async def test_unicode_spellings_of_an_email_cannot_duplicate_an_account(
    session: AsyncSession, config: AuthConfig, spelling: str
) -> None:
    _, admin, _ = await org_admin(session, "Emails")
    await users.invite_user(session, config, admin, UserCreate(email="bob@example.com"))
    with pytest.raises(Conflict) as err:
        await users.invite_user(session, config, admin, UserCreate(email=spelling))
    assert err.value.field == "email"
    # the contract refuses a NUL at the door; auth refuses it too when a message skips the model
    with pytest.raises(ValidationError):
        UserCreate(email="bob@example.com\x00x")
    raw = UserCreate.model_construct(email="bob@example.com\x00x", name="", role="user", password=None)
    with pytest.raises(Invalid):
        await users.invite_user(session, config, admin, raw)


async def test_invite_role_change_and_deactivation_are_audited(
    session: AsyncSession, config: AuthConfig
) -> None:
    _, admin, _ = await org_admin(session, "People")
    invited = await users.invite_user(
        session, config, admin, UserCreate(email="carol@people.example", name=HOSTILE, role="viewer")
    )
    assert invited.password and invited.name == HOSTILE  # stored and returned as inert text
    pair = await signed_in(session, config, "carol@people.example", invited.password)
    await users.update_user(
        session, config, UpdateUserRequest(actor=admin, id=invited.id, user=UserUpdate(role="user"))
    )
    await users.update_user(
        session, config, UpdateUserRequest(actor=admin, id=invited.id, user=UserUpdate(is_active=False))
    )
    with pytest.raises(Unauthorized):
        await sessions.refresh(session, config, pair.refresh_token)
    page = await audit.list_audit(session, ListAuditRequest(actor=admin))
    actions = [e.action for e in page.items]
    assert actions[:4] == ["user.deactivated", "user.role_changed", "login", "user.created"]
    role_change = page.items[1]
    assert role_change.detail == {"from": "viewer", "to": "user"}
    assert (role_change.actor_user_id, role_change.client_ip) == (admin.user_id, "203.0.113.9")


async def test_last_admin_cannot_be_demoted_and_other_orgs_users_are_404(
    session: AsyncSession, config: AuthConfig
) -> None:
    _, a, a_admin = await org_admin(session, "Alone")
    _, b, _ = await org_admin(session, "Other")
    with pytest.raises(Conflict):
        await users.update_user(
            session, config, UpdateUserRequest(actor=a, id=a_admin.id, user=UserUpdate(role="viewer"))
        )
    with pytest.raises(NotFound):
        await users.update_user(
            session, config, UpdateUserRequest(actor=b, id=a_admin.id, user=UserUpdate(role="viewer"))
        )
    assert a_admin.id not in {u.id for u in await users.list_users(session, b)}


async def test_audit_log_filters_and_pages(session: AsyncSession, config: AuthConfig, clock: Clock) -> None:
    _, admin, _ = await org_admin(session, "Audited")
    for i in range(5):
        clock.advance(10)
        await api_keys.create_api_key(
            session, config, admin, ApiKeyCreate(name=f"k{i}", scopes=["tasks:read"])
        )
    start = clock.now + timedelta(seconds=5)
    clock.advance(10)
    await api_keys.create_api_key(session, config, admin, ApiKeyCreate(name="late", scopes=["tasks:read"]))
    seen: list[int] = []
    cursor = None
    while True:
        page = await audit.list_audit(
            session, ListAuditRequest(actor=admin, action="api_key.created", limit=2, cursor=cursor)
        )
        seen += [e.id for e in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 6 and seen == sorted(seen, reverse=True)
    recent = await audit.list_audit(session, ListAuditRequest(actor=admin, since=start))
    assert [e.detail for e in recent.items] == [{"scopes": ["tasks:read"]}]
    with pytest.raises(Forbidden):
        await audit.list_audit(session, ListAuditRequest(actor=admin.model_copy(update={"role": "viewer"})))
