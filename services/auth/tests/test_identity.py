"""Organizations, users, API keys, brute-force throttling and the audit log, against real PostgreSQL
(one rolled-back transaction per test); the clock is injected, nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from browserfleet_auth import repository as repo
from browserfleet_auth.models import ApiKey, AuditLog, User, outbox
from browserfleet_auth.service import (
    INVALID_CREDENTIALS,
    AuthService,
    BruteForcePolicy,
    LoginFailed,
    LoginThrottled,
)
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
from sqlalchemy import select as sa_select
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

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
        from browserfleet_core.outbox import OutboxRelay

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
def svc(clock: Clock) -> AuthService:
    policy = BruteForcePolicy(
        slow_after=3, max_delay_seconds=30, lock_after_account=6, lock_after_ip=8, lock_seconds=600
    )
    return AuthService(brute_force=policy, clock=clock, relay=FakeRelay())  # type: ignore[arg-type]


async def org_admin(
    session: AsyncSession, svc: AuthService, name: str, *, operator: bool = False
) -> tuple[str, Actor, User]:
    org = await svc.create_organization(session, name)
    admin = await svc.create_user(
        session, org_id=org.id, email=f"admin@{org.slug}.example", password=PASSWORD, role="admin"
    )
    admin.platform_operator = operator
    session.add(admin)
    await session.flush()
    return org.id, Actor(org_id=org.id, user_id=admin.id, role="admin", client_ip="203.0.113.9"), admin


# --- API keys -------------------------------------------------------------------------------------
async def test_api_key_is_shown_once_stored_hashed_and_authenticates(
    session: AsyncSession, svc: AuthService
) -> None:
    org_id, actor, _ = await org_admin(session, svc, "Keys")
    created = await svc.create_api_key(session, actor, ApiKeyCreate(name="ci", scopes=["tasks:write"]))
    assert created.key.startswith("sk_api_") and len(created.key) >= 7 + 43  # 256 bits, base64url
    row = (await session.exec(select(ApiKey).where(ApiKey.id == created.id))).one()
    assert row.key_hash != created.key and created.key not in str(row.model_dump())
    listed = await svc.list_api_keys(session, actor)
    assert [k.id for k in listed] == [created.id] and "key" not in listed[0].model_dump()
    principal = await svc.authenticate_api_key(session, created.key)
    assert (principal.org_id, principal.key_id, principal.scopes, principal.plan) == (
        org_id,
        created.id,
        ["tasks:write"],
        "free",
    )
    await session.refresh(row)
    assert row.last_used_at is not None


async def test_revoked_expired_and_unknown_keys_are_401(
    session: AsyncSession, svc: AuthService, clock: Clock
) -> None:
    _, actor, _ = await org_admin(session, svc, "Keys2")
    expiring = await svc.create_api_key(
        session,
        actor,
        ApiKeyCreate(name="short", scopes=["tasks:read"], expires_at=clock.now + timedelta(hours=1)),
    )
    revoked = await svc.create_api_key(session, actor, ApiKeyCreate(name="gone", scopes=["tasks:read"]))
    await svc.revoke_api_key(session, actor, revoked.id)
    await svc.revoke_api_key(session, actor, revoked.id)  # idempotent
    await svc.authenticate_api_key(session, expiring.key)
    clock.advance(3601)
    for raw in (expiring.key, revoked.key, "sk_api_" + "A" * 43, "not-a-key"):
        with pytest.raises(Unauthorized) as err:
            await svc.authenticate_api_key(session, raw)
        assert err.value.code == "invalid_api_key"


async def test_api_key_expiry_in_the_past_is_422(
    session: AsyncSession, svc: AuthService, clock: Clock
) -> None:
    _, actor, _ = await org_admin(session, svc, "Keys3")
    with pytest.raises(Invalid) as err:
        await svc.create_api_key(
            session, actor, ApiKeyCreate(name="x", scopes=["tasks:read"], expires_at=clock.now - timedelta(1))
        )
    assert err.value.field == "expires_at"


async def test_another_orgs_key_is_404_and_non_admins_cannot_manage_keys(
    session: AsyncSession, svc: AuthService
) -> None:
    _, a, _ = await org_admin(session, svc, "Org A")
    _, b, _ = await org_admin(session, svc, "Org B")
    key = await svc.create_api_key(session, a, ApiKeyCreate(name="a", scopes=["tasks:read"]))
    with pytest.raises(NotFound):
        await svc.revoke_api_key(session, b, key.id)
    assert await svc.list_api_keys(session, b) == []
    await svc.authenticate_api_key(session, key.key)  # still valid
    with pytest.raises(Forbidden):
        await svc.create_api_key(
            session, a.model_copy(update={"role": "user"}), ApiKeyCreate(name="u", scopes=["tasks:read"])
        )


# --- brute force ----------------------------------------------------------------------------------
async def test_failed_logins_slow_down_then_lock_with_one_message(
    session: AsyncSession, svc: AuthService, clock: Clock
) -> None:
    _, _, admin = await org_admin(session, svc, "Brute")
    for _ in range(3):
        with pytest.raises(LoginFailed) as failed:
            await svc.login(session, admin.email, "wrong", client_ip="198.51.100.1")
        assert failed.value.message == INVALID_CREDENTIALS
    # fourth try right away: must wait 1 s (2**0), even with the right password
    with pytest.raises(LoginThrottled) as throttled:
        await svc.login(session, admin.email, PASSWORD, client_ip="198.51.100.2")
    assert throttled.value.retry_after == 1 and throttled.value.status == 429
    clock.advance(1)
    with pytest.raises(LoginFailed):
        await svc.login(session, admin.email, "wrong", client_ip="198.51.100.2")
    clock.advance(1)  # now 2 s are due
    with pytest.raises(LoginThrottled):
        await svc.login(session, admin.email, PASSWORD)
    for delay in (2, 4):
        clock.advance(delay)
        with pytest.raises(LoginFailed):
            await svc.login(session, admin.email, "wrong")
    # six failures: locked for 600 s, whatever the password
    clock.advance(60)
    with pytest.raises(LoginThrottled) as locked:
        await svc.login(session, admin.email, PASSWORD)
    assert 500 < locked.value.retry_after <= 600
    # an unknown email is throttled just the same: the lock says nothing about accounts
    for _ in range(3):
        with pytest.raises(LoginFailed):
            await svc.login(session, "nobody@nowhere.example", "x")
    with pytest.raises(LoginThrottled):
        await svc.login(session, "nobody@nowhere.example", "x")
    clock.advance(601)
    pair = await svc.login(session, admin.email, PASSWORD)
    assert pair.access_token
    # success resets the account's counter
    assert await repo.get_throttles_for_update(session, [f"email:{admin.email}"]) == {}


async def test_one_address_trying_many_accounts_is_locked(
    session: AsyncSession, svc: AuthService, clock: Clock
) -> None:
    _, _, admin = await org_admin(session, svc, "Spray")
    for i in range(8):
        clock.advance(60)  # slower than the per-account slow-down, one account each
        with pytest.raises(LoginFailed):
            await svc.login(session, f"user{i}@spray.example", "guess", client_ip="192.0.2.66")
    with pytest.raises(LoginThrottled):
        await svc.login(session, admin.email, PASSWORD, client_ip="192.0.2.66")
    assert (await svc.login(session, admin.email, PASSWORD, client_ip="192.0.2.67")).access_token


# --- organizations --------------------------------------------------------------------------------
async def test_only_a_platform_operator_manages_organizations(
    session: AsyncSession, svc: AuthService
) -> None:
    _, op, _ = await org_admin(session, svc, "Operators", operator=True)
    _, admin, _ = await org_admin(session, svc, "Tenant")
    org = await svc.create_org(session, op, OrganizationCreate(name="New Co", slug="new-co", plan="pro"))
    assert (org.slug, org.plan) == ("new-co", "pro")
    with pytest.raises(Forbidden):
        await svc.create_org(session, admin, OrganizationCreate(name="Nope"))
    with pytest.raises(Forbidden):
        await svc.list_organizations(session, admin)
    with pytest.raises(NotFound):  # an id names nothing to a non-operator
        await svc.update_org(
            session,
            UpdateOrganizationRequest(actor=admin, id=org.id, organization=OrganizationUpdate(plan="free")),
        )
    updated = await svc.update_org(
        session,
        UpdateOrganizationRequest(
            actor=op,
            id=org.id,
            organization=OrganizationUpdate(plan="enterprise", settings={"max_concurrency": 5}),
        ),
    )
    assert (updated.plan, updated.settings) == ("enterprise", {"max_concurrency": 5})
    assert org.id in {o.id for o in await svc.list_organizations(session, op)}


@pytest.mark.parametrize("spelling", ["ACME", "\uff41\uff43\uff4d\uff45", " Acme ", "acme"])
async def test_unicode_spellings_of_a_slug_cannot_duplicate_it(
    session: AsyncSession, svc: AuthService, spelling: str
) -> None:
    _, op, _ = await org_admin(session, svc, "Ops", operator=True)
    await svc.create_org(session, op, OrganizationCreate(name="Acme", slug="acme"))
    with pytest.raises(Conflict) as err:
        await svc.create_org(session, op, OrganizationCreate(name="Acme 2", slug=spelling))
    assert err.value.field == "slug"


@pytest.mark.parametrize("slug", ["acme\x00", "ac me", "-acme", "acmé", "acme-", "ac_me"])
async def test_bad_slugs_are_422(session: AsyncSession, svc: AuthService, slug: str) -> None:
    _, op, _ = await org_admin(session, svc, "Ops", operator=True)
    with pytest.raises(Invalid) as err:
        await svc.create_org(session, op, OrganizationCreate(name="x", slug=slug))
    assert err.value.field == "slug"


async def test_deleting_an_organization_removes_users_and_keys_and_emits_an_event(
    session: AsyncSession, svc: AuthService
) -> None:
    _, op, _ = await org_admin(session, svc, "Ops", operator=True)
    victim_id, victim, victim_admin = await org_admin(session, svc, "Victim")
    await svc.create_api_key(session, victim, ApiKeyCreate(name="k", scopes=["tasks:read"]))
    with pytest.raises(Conflict):
        await svc.delete_org(session, op, op.org_id)
    await svc.delete_org(session, op, victim_id)
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
    session: AsyncSession, svc: AuthService, spelling: str
) -> None:
    _, admin, _ = await org_admin(session, svc, "Emails")
    await svc.invite_user(session, admin, UserCreate(email="bob@example.com"))
    with pytest.raises(Conflict) as err:
        await svc.invite_user(session, admin, UserCreate(email=spelling))
    assert err.value.field == "email"
    with pytest.raises(Invalid):
        await svc.invite_user(session, admin, UserCreate(email="bob@example.com\x00x"))


async def test_invite_role_change_and_deactivation_are_audited(
    session: AsyncSession, svc: AuthService
) -> None:
    _, admin, _ = await org_admin(session, svc, "People")
    invited = await svc.invite_user(
        session, admin, UserCreate(email="carol@people.example", name=HOSTILE, role="viewer")
    )
    assert invited.password and invited.name == HOSTILE  # stored and returned as inert text
    pair = await svc.login(session, "carol@people.example", invited.password)
    await svc.update_user(
        session, UpdateUserRequest(actor=admin, id=invited.id, user=UserUpdate(role="user"))
    )
    await svc.update_user(
        session, UpdateUserRequest(actor=admin, id=invited.id, user=UserUpdate(is_active=False))
    )
    with pytest.raises(Unauthorized):
        await svc.refresh(session, pair.refresh_token)
    page = await svc.list_audit(session, ListAuditRequest(actor=admin))
    actions = [e.action for e in page.items]
    assert actions[:4] == ["user.deactivated", "user.role_changed", "login", "user.created"]
    role_change = page.items[1]
    assert role_change.detail == {"from": "viewer", "to": "user"}
    assert (role_change.actor_user_id, role_change.client_ip) == (admin.user_id, "203.0.113.9")


async def test_last_admin_cannot_be_demoted_and_other_orgs_users_are_404(
    session: AsyncSession, svc: AuthService
) -> None:
    _, a, a_admin = await org_admin(session, svc, "Alone")
    _, b, _ = await org_admin(session, svc, "Other")
    with pytest.raises(Conflict):
        await svc.update_user(
            session, UpdateUserRequest(actor=a, id=a_admin.id, user=UserUpdate(role="viewer"))
        )
    with pytest.raises(NotFound):
        await svc.update_user(
            session, UpdateUserRequest(actor=b, id=a_admin.id, user=UserUpdate(role="viewer"))
        )
    assert a_admin.id not in {u.id for u in await svc.list_users(session, b)}


async def test_audit_log_filters_and_pages(session: AsyncSession, svc: AuthService, clock: Clock) -> None:
    _, admin, _ = await org_admin(session, svc, "Audited")
    for i in range(5):
        clock.advance(10)
        await svc.create_api_key(session, admin, ApiKeyCreate(name=f"k{i}", scopes=["tasks:read"]))
    start = clock.now + timedelta(seconds=5)
    clock.advance(10)
    await svc.create_api_key(session, admin, ApiKeyCreate(name="late", scopes=["tasks:read"]))
    seen: list[int] = []
    cursor = None
    while True:
        page = await svc.list_audit(
            session, ListAuditRequest(actor=admin, action="api_key.created", limit=2, cursor=cursor)
        )
        seen += [e.id for e in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 6 and seen == sorted(seen, reverse=True)
    recent = await svc.list_audit(session, ListAuditRequest(actor=admin, since=start))
    assert [e.detail for e in recent.items] == [{"scopes": ["tasks:read"]}]
    with pytest.raises(Forbidden):
        await svc.list_audit(session, ListAuditRequest(actor=admin.model_copy(update={"role": "viewer"})))
