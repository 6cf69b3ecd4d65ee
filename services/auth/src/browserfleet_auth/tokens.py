"""Signing keys, the JWKS that publishes them, and the token pair a sign-in or a refresh hands out: an
Ed25519 access token (JWT) and an opaque refresh token, stored as SHA-256."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from browserfleet_contracts.auth import AMR_CLAIM, ISSUED_CLAIM, MFA_AT_CLAIM, Jwks, TokenPair
from browserfleet_core import security
from browserfleet_core.db import AsyncSession, utcnow

from . import repository as repo
from .config import AuthConfig
from .models import RefreshSession, SigningKey, User

log = logging.getLogger(__name__)

REFRESH_PREFIX = "rt_"
_SIGNING_KEY_LOCK = "auth:signing-key"


async def signing_key(session: AsyncSession) -> SigningKey:
    """The key new tokens are signed with; the first caller ever creates it."""
    key = await repo.current_signing_key(session)
    if key is not None:
        return key
    # Replicas starting together would each mint a key; the lock makes the second one find the first.
    await repo.advisory_xact_lock(session, _SIGNING_KEY_LOCK)
    key = await repo.current_signing_key(session)
    if key is not None:
        return key
    return await _new_signing_key(session)


async def rotate_signing_key(session: AsyncSession) -> SigningKey:
    """Retire the current key (it stays in the JWKS for one access-token lifetime) and start a new one."""
    await repo.advisory_xact_lock(session, _SIGNING_KEY_LOCK)
    await repo.retire_signing_keys(session, utcnow())
    return await _new_signing_key(session)


async def _new_signing_key(session: AsyncSession) -> SigningKey:
    kid, pem = security.generate_signing_key()
    key = SigningKey(kid=kid, private_pem=pem, created_at=utcnow())
    await repo.add(session, key)
    log.info("created signing key %s", kid)
    return key


async def jwks(session: AsyncSession, config: AuthConfig) -> Jwks:
    await signing_key(session)
    retired_after = utcnow() - timedelta(seconds=config.access_ttl_seconds)
    keys = await repo.published_signing_keys(session, retired_after)
    return Jwks(keys=[security.public_jwk(k.private_pem, k.kid) for k in keys])


async def issue(
    session: AsyncSession,
    config: AuthConfig,
    user: User,
    *,
    family_id: str,
    amr: list[str],
    mfa_at: datetime | None = None,
) -> TokenPair:
    """A token pair for `user`. `amr` says how the sign-in was made and `mfa_at` when its second factor was
    checked; the refresh family keeps both, so its later access tokens say the same and no more."""
    key = await signing_key(session)
    org = await repo.get_organization(session, user.org_id)
    extra: dict[str, Any] = {AMR_CLAIM: amr, ISSUED_CLAIM: round(config.now().timestamp(), 3)}
    if org is not None:
        extra["plan"] = org.plan  # per-plan limits without a lookup
    if mfa_at is not None:
        extra[MFA_AT_CLAIM] = int(mfa_at.timestamp())
    access, _jti = security.sign_access_token(
        key.private_pem,
        key.kid,
        sub=user.id,
        org=user.org_id,
        role=user.role,
        ttl_seconds=config.access_ttl_seconds,
        extra=extra,
    )
    raw = security.new_token(REFRESH_PREFIX)
    now = utcnow()
    await repo.add(
        session,
        RefreshSession(
            family_id=family_id,
            user_id=user.id,
            token_hash=security.hash_token(raw),
            expires_at=now + timedelta(seconds=config.refresh_ttl_seconds),
            created_at=now,
            amr=list(amr),
            mfa_at=mfa_at,
        ),
    )
    return TokenPair(access_token=access, refresh_token=raw, expires_in=config.access_ttl_seconds)
