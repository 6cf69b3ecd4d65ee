"""Auth logic against real PostgreSQL, one rolled-back transaction per test."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from browserfleet_auth import organizations, sessions, tokens, users
from browserfleet_auth import repository as repo
from browserfleet_auth.config import AuthConfig
from browserfleet_auth.models import Organization, RefreshSession, User
from browserfleet_auth.sessions import INVALID_CREDENTIALS, RefreshTokenReused
from browserfleet_auth.validation import normalize_email, slugify
from browserfleet_core import security
from browserfleet_core.db import utcnow
from browserfleet_core.errors import Conflict, Invalid, Unauthorized
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from .conftest import signed_in

PASSWORD = "correct horse battery staple"


async def make_user(
    session: AsyncSession, *, email: str = "Alice@Example.com", role: str = "user"
) -> tuple[Organization, User]:
    org = await organizations.create_organization(session, "Acme Corp")
    user = await users.create_user(
        session, org_id=org.id, email=email, password=PASSWORD, role=role, name="Alice"
    )
    return org, user


def verifier(config: AuthConfig, session: AsyncSession) -> security.JwksVerifier:
    async def fetch() -> dict[str, Any]:
        return (await tokens.jwks(session, config)).model_dump()

    return security.JwksVerifier(fetch)


async def test_login_issues_verifiable_tokens(session: AsyncSession, config: AuthConfig) -> None:
    org, user = await make_user(session, role="admin")
    assert user.email == "alice@example.com"

    pair = await signed_in(session, config, "alice@example.com", PASSWORD)

    claims = await verifier(config, session).verify(pair.access_token)
    assert (claims["sub"], claims["org"], claims["role"]) == (user.id, org.id, "admin")
    assert claims["exp"] - claims["iat"] == 900 == pair.expires_in
    assert pair.refresh_token.startswith("rt_")
    stored = await repo.get_refresh_session(session, security.hash_token(pair.refresh_token))
    assert stored is not None and stored.user_id == user.id
    assert (stored.expires_at - stored.created_at) == timedelta(days=7)
    # only the hash is kept
    raw = (
        await session.exec(select(RefreshSession).where(RefreshSession.token_hash == pair.refresh_token))
    ).first()
    assert raw is None
    await session.refresh(user)
    assert user.last_login is not None


async def test_login_accepts_other_spellings_of_the_email(session: AsyncSession, config: AuthConfig) -> None:
    await make_user(session)
    await sessions.login(
        session, config, " \uff21\uff2c\uff29\uff23\uff25@example.COM ", PASSWORD
    )  # full-width letters fold under NFKC


async def test_wrong_password_and_unknown_email_fail_alike(session: AsyncSession, config: AuthConfig) -> None:
    await make_user(session)
    errors = []
    for email, password in [("alice@example.com", "wrong"), ("nobody@example.com", PASSWORD)]:
        with pytest.raises(Unauthorized) as info:
            await sessions.login(session, config, email, password)
        errors.append((info.value.status, info.value.code, info.value.message))
    assert errors[0] == errors[1] == (401, "invalid_credentials", INVALID_CREDENTIALS)


async def test_inactive_user_cannot_log_in(session: AsyncSession, config: AuthConfig) -> None:
    _, user = await make_user(session)
    user.is_active = False
    session.add(user)
    with pytest.raises(Unauthorized) as info:
        await sessions.login(session, config, "alice@example.com", PASSWORD)
    assert info.value.message == INVALID_CREDENTIALS


async def test_unknown_email_still_pays_for_a_verification(session: AsyncSession) -> None:
    calls: list[tuple[str | None, str]] = []

    def spy(stored_hash: str | None, password: str) -> bool:
        calls.append((stored_hash, password))
        return security.verify_password(stored_hash, password)

    config = AuthConfig(verify_password=spy)
    await make_user(session)
    with pytest.raises(Unauthorized):
        await sessions.login(session, config, "nobody@example.com", "guess")
    assert calls == [(None, "guess")]
    await sessions.login(session, config, "alice@example.com", PASSWORD)
    assert len(calls) == 2 and calls[1][0] is not None


async def test_login_upgrades_an_outdated_hash(session: AsyncSession, config: AuthConfig) -> None:
    _, user = await make_user(session)
    user.password_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    session.add(user)
    assert security.password_needs_rehash(user.password_hash)

    await sessions.login(session, config, "alice@example.com", PASSWORD)

    await session.refresh(user)
    assert not security.password_needs_rehash(user.password_hash)
    assert security.verify_password(user.password_hash, PASSWORD)


async def test_refresh_rotates_within_the_family(session: AsyncSession, config: AuthConfig) -> None:
    _, user = await make_user(session)
    first = await signed_in(session, config, "alice@example.com", PASSWORD)

    second = await sessions.refresh(session, config, first.refresh_token)

    assert second.refresh_token != first.refresh_token
    old = await repo.get_refresh_session(session, security.hash_token(first.refresh_token))
    new = await repo.get_refresh_session(session, security.hash_token(second.refresh_token))
    assert old is not None and new is not None
    assert old.used_at is not None and new.used_at is None
    assert old.family_id == new.family_id
    claims = await verifier(config, session).verify(second.access_token)
    assert claims["sub"] == user.id


async def test_reusing_a_refresh_token_revokes_the_family(session: AsyncSession, config: AuthConfig) -> None:
    await make_user(session)
    # another device: a family of its own
    other_login = await signed_in(session, config, "alice@example.com", PASSWORD)
    first = await signed_in(session, config, "alice@example.com", PASSWORD)
    second = await sessions.refresh(session, config, first.refresh_token)

    with pytest.raises(RefreshTokenReused) as info:
        await sessions.refresh(session, config, first.refresh_token)
    assert info.value.status == 401

    with pytest.raises(Unauthorized):
        await sessions.refresh(session, config, second.refresh_token)
    stored = await repo.get_refresh_session(session, security.hash_token(second.refresh_token))
    assert stored is not None
    family = await repo.family_sessions(session, stored.family_id)
    assert len(family) == 2 and all(s.revoked_at is not None for s in family)
    await sessions.refresh(session, config, other_login.refresh_token)  # untouched


@pytest.mark.parametrize("token", ["rt_unknown", "not-a-refresh-token", ""])
async def test_unknown_refresh_token_is_401(session: AsyncSession, config: AuthConfig, token: str) -> None:
    with pytest.raises(Unauthorized) as info:
        await sessions.refresh(session, config, token)
    assert info.value.code == "invalid_refresh_token"


async def test_expired_refresh_token_is_401(session: AsyncSession, config: AuthConfig) -> None:
    await make_user(session)
    pair = await signed_in(session, config, "alice@example.com", PASSWORD)
    stored = await repo.get_refresh_session(session, security.hash_token(pair.refresh_token))
    assert stored is not None
    stored.expires_at = utcnow() - timedelta(seconds=1)
    session.add(stored)
    with pytest.raises(Unauthorized) as info:
        await sessions.refresh(session, config, pair.refresh_token)
    assert info.value.code == "invalid_refresh_token"


async def test_logout_revokes_the_family(session: AsyncSession, config: AuthConfig) -> None:
    await make_user(session)
    first = await signed_in(session, config, "alice@example.com", PASSWORD)
    second = await sessions.refresh(session, config, first.refresh_token)

    await sessions.logout(session, config, second.refresh_token)
    await sessions.logout(session, config, second.refresh_token)  # idempotent
    await sessions.logout(session, config, "rt_never-issued")

    with pytest.raises(Unauthorized) as info:
        await sessions.refresh(session, config, second.refresh_token)
    assert info.value.code == "invalid_refresh_token"


async def test_me_is_scoped_to_the_users_org(session: AsyncSession) -> None:
    org, user = await make_user(session)
    other = await organizations.create_organization(session, "Acme Corp")
    assert other.slug != org.slug == "acme-corp"

    me = await sessions.me(session, user_id=user.id, org_id=org.id)
    assert (me.user.id, me.user.email, me.role, me.organization.slug) == (
        user.id,
        user.email,
        "user",
        "acme-corp",
    )

    for user_id, org_id in [(user.id, other.id), ("missing", org.id)]:
        with pytest.raises(Unauthorized):
            await sessions.me(session, user_id=user_id, org_id=org_id)


async def test_bootstrap_creates_once(session: AsyncSession, config: AuthConfig) -> None:
    first = await organizations.bootstrap(session, org_name="Default", admin_email="Admin@Browserfleet.local")
    assert first.created and first.password is not None and len(first.password) >= 20
    assert first.admin_email == "admin@browserfleet.local"
    pair = await signed_in(session, config, first.admin_email, first.password)
    assert (await verifier(config, session).verify(pair.access_token))["role"] == "admin"

    second = await organizations.bootstrap(session, org_name="Other", admin_email="someone@example.com")
    assert (second.created, second.org_id, second.admin_email, second.password) == (
        False,
        first.org_id,
        "admin@browserfleet.local",
        None,
    )


async def test_jwks_publishes_the_signing_key_and_recently_retired_ones(
    session: AsyncSession, config: AuthConfig
) -> None:
    await make_user(session)
    pair = await signed_in(session, config, "alice@example.com", PASSWORD)
    kid = security.jwt.get_unverified_header(pair.access_token)["kid"]
    assert kid in {k["kid"] for k in (await tokens.jwks(session, config)).keys}

    new_key = await tokens.rotate_signing_key(session)
    keys = {k["kid"] for k in (await tokens.jwks(session, config)).keys}
    assert keys == {kid, new_key.kid}
    await verifier(config, session).verify(pair.access_token)  # still valid until it expires

    old = await repo.current_signing_key(session)
    assert old is not None and old.kid == new_key.kid
    retired = [
        k for k in await repo.published_signing_keys(session, utcnow() - timedelta(days=1)) if k.kid == kid
    ]
    retired[0].retired_at = utcnow() - timedelta(seconds=901)
    session.add(retired[0])
    assert {k["kid"] for k in (await tokens.jwks(session, config)).keys} == {new_key.kid}


async def test_signing_key_is_created_once(session: AsyncSession) -> None:
    first = await tokens.signing_key(session)
    second = await tokens.signing_key(session)
    assert first.kid == second.kid


async def test_duplicate_email_is_a_conflict(session: AsyncSession) -> None:
    org, _ = await make_user(session)
    with pytest.raises(Conflict) as info:
        await users.create_user(session, org_id=org.id, email="ALICE@example.com", password="x")
    assert info.value.field == "email"


@pytest.mark.parametrize("raw", ["a\x00@example.com", "no-at-sign", "@example.com", "a b@example.com"])
def test_bad_emails_are_rejected_naming_the_field(raw: str) -> None:
    with pytest.raises(Invalid) as info:
        normalize_email(raw)
    assert info.value.field == "email"


def test_slugify() -> None:
    assert slugify("  Ünïcode & Co. ") == "unicode-co"
    assert slugify("!!!") == ""
