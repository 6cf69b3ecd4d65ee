"""Signing in and staying signed in: login (throttled), refresh-token rotation with reuse detection, logout,
and the principal an access token names.

A refresh token belongs to a family (one sign-in on one device); each refresh spends the token and issues
the next of the family. A spent token presented again means it was copied: the whole family is revoked.
"""

from __future__ import annotations

import asyncio
import logging

from browserfleet_contracts.auth import MePublic, TokenPair
from browserfleet_core import security
from browserfleet_core.db import AsyncSession, utcnow
from browserfleet_core.errors import Forbidden, Unauthorized

from . import audit, mfa, throttle, tokens
from . import repository as repo
from .config import AuthConfig
from .mfa import MfaFailed
from .models import RefreshSession, User
from .organizations import org_public
from .throttle import LoginThrottled
from .tokens import REFRESH_PREFIX
from .users import NO_PASSWORD, role_of, user_public
from .validation import normalize_email

log = logging.getLogger(__name__)

INVALID_CREDENTIALS = "invalid email or password"


class LoginFailed(Unauthorized):
    """Wrong email, wrong password or inactive account: one answer for all three. The caller commits the
    failure counters and the audit row before answering."""

    def __init__(self) -> None:
        super().__init__(INVALID_CREDENTIALS, code="invalid_credentials")


class RefreshTokenReused(Unauthorized):
    """A spent refresh token came back: its family has been revoked in the caller's transaction.

    The caller must commit that transaction before answering, or the revocation is rolled back with it.
    """

    code = "refresh_token_reused"

    def __init__(self) -> None:
        super().__init__("refresh token already used; the session has been revoked")


class SsoRequired(Forbidden):
    """The password was right, but the user's organization signs in through its identity provider only.
    Said only after the password checked out, so it tells a guesser nothing."""

    def __init__(self, slug: str) -> None:
        super().__init__(
            f"this organization signs in with single sign-on: GET /auth/sso/{slug}/login", code="sso_required"
        )


# Raised inside a transaction whose writes are the point of the answer: commit them, then raise.
COMMIT_THEN_RAISE: tuple[type[Exception], ...] = (
    LoginFailed,
    LoginThrottled,
    RefreshTokenReused,
    MfaFailed,
    SsoRequired,
)


async def login(
    session: AsyncSession, config: AuthConfig, email: str, password: str, *, client_ip: str | None = None
) -> mfa.SignIn:
    """Tokens, or an MFA challenge when a second factor applies. Failures raise `LoginFailed` /
    `LoginThrottled` / `SsoRequired`, whose audit rows and counters the caller must commit before answering
    (they are the point of the exercise)."""
    email = normalize_email(email)
    now = config.now()
    keys = throttle.throttle_keys(email, client_ip)
    wait = await throttle.wait_seconds(session, config.brute_force, keys, now)
    user = await repo.get_user_by_email(session, email)
    org_id = user.org_id if user is not None else None

    async def refused(action: str, outcome: str) -> None:  # names the email tried: it may have no account
        await audit.record(
            session, config.now(), action, outcome=outcome, org_id=org_id, client_ip=client_ip, target=email
        )

    if wait > 0:
        await refused("login.throttled", "denied")
        raise LoginThrottled(wait)
    # An unknown email still pays for one argon2 verification (against a dummy hash), so response
    # time does not tell which emails have accounts.
    # A user without a password (SSO) pays the same: their marker is no hash, so it is verified as unknown.
    stored = user.password_hash if user is not None and user.password_hash != NO_PASSWORD else None
    ok = await asyncio.to_thread(config.verify_password, stored, password)
    if not ok or user is None or not user.is_active:
        await throttle.record_failure(session, config.brute_force, keys, now)
        await refused("login.failed", "failure")
        raise LoginFailed()
    await throttle.clear_account(session, keys)
    await _refuse_if_sso_only(session, config, user, client_ip)
    if security.password_needs_rehash(user.password_hash):
        user.password_hash = await asyncio.to_thread(security.hash_password, password)
    user.last_login = now
    session.add(user)
    reply = await mfa.sign_in(session, config, user, amr=["pwd"])
    if isinstance(reply, TokenPair):  # with a challenge, the sign-in is recorded when it completes
        await audit.record_own(session, config.now(), "login", user, client_ip=client_ip)
    return reply


async def _refuse_if_sso_only(
    session: AsyncSession, config: AuthConfig, user: User, client_ip: str | None
) -> None:
    sso = await repo.get_sso_config(session, user.org_id)
    if sso is None or not sso.enabled or not sso.sso_only or sso.break_glass_user_id == user.id:
        return
    org = await repo.get_organization(session, user.org_id)
    await audit.record_own(
        session,
        config.now(),
        "login.failed",
        user,
        outcome="denied",
        client_ip=client_ip,
        detail={"reason": "sso_only"},
    )
    raise SsoRequired(org.slug if org is not None else "")


async def refresh(session: AsyncSession, config: AuthConfig, refresh_token: str) -> TokenPair:
    current = await _locked_refresh_session(session, refresh_token)
    now = utcnow()
    if current.used_at is not None:
        await repo.revoke_family(session, current.family_id, now)
        log.warning("refresh token reuse: revoked family %s of user %s", current.family_id, current.user_id)
        await _record_family(session, config, "session.family_revoked", current, reason="refresh token reuse")
        raise RefreshTokenReused()
    if current.revoked_at is not None or current.expires_at <= now:
        raise Unauthorized("refresh token expired or revoked", code="invalid_refresh_token")
    user = await repo.get_user(session, current.user_id)
    if user is None or not user.is_active:
        await repo.revoke_family(session, current.family_id, now)
        raise Unauthorized("refresh token expired or revoked", code="invalid_refresh_token")
    if current.mfa_at is None and await mfa.applies(session, user):
        # signed in before a second factor applied to them (enrolled elsewhere, or the org now requires it)
        raise Unauthorized("sign in again with your second factor", code="mfa_required")
    current.used_at = now
    session.add(current)
    return await tokens.issue(
        session, config, user, family_id=current.family_id, amr=list(current.amr), mfa_at=current.mfa_at
    )


async def logout(session: AsyncSession, config: AuthConfig, refresh_token: str) -> None:
    """Revokes the token's whole family; an unknown or already revoked token is not an error."""
    if not refresh_token.startswith(REFRESH_PREFIX):
        return
    current = await repo.get_refresh_session(session, security.hash_token(refresh_token))
    if current is not None and await repo.revoke_family(session, current.family_id, utcnow()):
        await _record_family(session, config, "logout", current)


async def _record_family(
    session: AsyncSession, config: AuthConfig, action: str, family: RefreshSession, **detail: str
) -> None:
    owner = await repo.get_user(session, family.user_id)
    await audit.record(
        session,
        config.now(),
        action,
        org_id=owner.org_id if owner else None,
        actor_user_id=family.user_id,
        target=family.family_id,
        detail=detail,
    )


async def _locked_refresh_session(session: AsyncSession, token: str) -> RefreshSession:
    found = None
    if token.startswith(REFRESH_PREFIX):
        found = await repo.get_refresh_session_for_update(session, security.hash_token(token))
    if found is None:
        raise Unauthorized("unknown refresh token", code="invalid_refresh_token")
    return found


async def me(session: AsyncSession, *, user_id: str, org_id: str) -> MePublic:
    user = await repo.get_org_user(session, org_id, user_id)
    org = await repo.get_organization(session, org_id) if user is not None else None
    if user is None or org is None or not user.is_active:
        # The token named a principal that is gone (or never matched): the caller must log in again.
        raise Unauthorized("user not found or inactive", code="invalid_principal")
    return MePublic(user=user_public(user), role=role_of(user), organization=org_public(org))
