"""Identity logic: login, refresh-token rotation, logout, the current principal, JWKS, bootstrap.

Takes an `AsyncSession` inside the caller's transaction and never commits. Argon2 runs in a worker
thread: it is deliberately slow (tens of milliseconds, 64 MiB) and would otherwise stall every other
request this process is serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import unicodedata
from collections.abc import Callable
from datetime import timedelta

from browserfleet_contracts.auth import (
    BootstrapReply,
    Jwks,
    MePublic,
    OrganizationPublic,
    TokenPair,
    UserPublic,
)
from browserfleet_contracts.common import Role
from browserfleet_core import security
from browserfleet_core.db import new_id, utcnow
from browserfleet_core.errors import Conflict, Invalid, Unauthorized
from sqlmodel.ext.asyncio.session import AsyncSession

from . import repository as repo
from .models import PLANS, ROLES, Organization, RefreshSession, SigningKey, User

log = logging.getLogger(__name__)

REFRESH_PREFIX = "rt_"
INVALID_CREDENTIALS = "invalid email or password"
BOOTSTRAP_PASSWORD_BYTES = 18  # token_urlsafe(18) -> 24 characters, 144 bits
_SIGNING_KEY_LOCK = "auth:signing-key"
_BOOTSTRAP_LOCK = "auth:bootstrap"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

PasswordVerifier = Callable[[str | None, str], bool]


class RefreshTokenReused(Unauthorized):
    """A spent refresh token came back: its family has been revoked in the caller's transaction.

    The caller must commit that transaction before answering, or the revocation is rolled back with it.
    """

    code = "refresh_token_reused"

    def __init__(self) -> None:
        super().__init__("refresh token already used; the session has been revoked")


def normalize_email(raw: str, *, field: str = "email") -> str:
    """One spelling per mailbox: NFKC (full-width and compatibility forms fold), trimmed, lower-cased."""
    if "\x00" in raw:
        raise Invalid(f"{field}: must not contain NUL", field=field)
    email = unicodedata.normalize("NFKC", raw).strip().lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or len(email) > 320 or _CONTROL.search(email) or " " in email:
        raise Invalid(f"{field}: not a valid email address", field=field)
    return email


def clean_name(raw: str, *, field: str, max_length: int = 200) -> str:
    name = unicodedata.normalize("NFKC", raw).strip()
    if _CONTROL.search(name):
        raise Invalid(f"{field}: must not contain control characters", field=field)
    if not name:
        raise Invalid(f"{field}: must not be empty", field=field)
    if len(name) > max_length:
        raise Invalid(f"{field}: at most {max_length} characters", field=field)
    return name


def slugify(name: str, *, max_length: int = 63) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:max_length].strip("-")


class AuthService:
    def __init__(
        self,
        *,
        access_token_ttl_seconds: int = 900,
        refresh_token_ttl_seconds: int = 604_800,
        verify_password: PasswordVerifier = security.verify_password,
    ) -> None:
        self.access_ttl = access_token_ttl_seconds
        self.refresh_ttl = refresh_token_ttl_seconds
        self._verify_password = verify_password

    # --- tokens ------------------------------------------------------------------------------------
    async def login(self, session: AsyncSession, email: str, password: str) -> TokenPair:
        email = normalize_email(email)
        user = await repo.get_user_by_email(session, email)
        # An unknown email still pays for one argon2 verification (against a dummy hash), so response
        # time does not tell which emails have accounts.
        stored = user.password_hash if user is not None else None
        ok = await asyncio.to_thread(self._verify_password, stored, password)
        if not ok or user is None or not user.is_active:
            raise Unauthorized(INVALID_CREDENTIALS, code="invalid_credentials")
        if security.password_needs_rehash(user.password_hash):
            user.password_hash = await asyncio.to_thread(security.hash_password, password)
        user.last_login = utcnow()
        session.add(user)
        return await self._issue(session, user, family_id=new_id())

    async def refresh(self, session: AsyncSession, refresh_token: str) -> TokenPair:
        current = await self._locked_refresh_session(session, refresh_token)
        now = utcnow()
        if current.used_at is not None:
            await repo.revoke_family(session, current.family_id, now)
            log.warning(
                "refresh token reuse: revoked family %s of user %s", current.family_id, current.user_id
            )
            raise RefreshTokenReused()
        if current.revoked_at is not None or current.expires_at <= now:
            raise Unauthorized("refresh token expired or revoked", code="invalid_refresh_token")
        user = await repo.get_user(session, current.user_id)
        if user is None or not user.is_active:
            await repo.revoke_family(session, current.family_id, now)
            raise Unauthorized("refresh token expired or revoked", code="invalid_refresh_token")
        current.used_at = now
        session.add(current)
        return await self._issue(session, user, family_id=current.family_id)

    async def logout(self, session: AsyncSession, refresh_token: str) -> None:
        """Revokes the token's whole family; an unknown or already revoked token is not an error."""
        if not refresh_token.startswith(REFRESH_PREFIX):
            return
        current = await repo.get_refresh_session(session, security.hash_token(refresh_token))
        if current is not None:
            await repo.revoke_family(session, current.family_id, utcnow())

    async def _locked_refresh_session(self, session: AsyncSession, token: str) -> RefreshSession:
        found = None
        if token.startswith(REFRESH_PREFIX):
            found = await repo.get_refresh_session_for_update(session, security.hash_token(token))
        if found is None:
            raise Unauthorized("unknown refresh token", code="invalid_refresh_token")
        return found

    async def _issue(self, session: AsyncSession, user: User, *, family_id: str) -> TokenPair:
        key = await self.signing_key(session)
        access, _jti = security.sign_access_token(
            key.private_pem,
            key.kid,
            sub=user.id,
            org=user.org_id,
            role=user.role,
            ttl_seconds=self.access_ttl,
        )
        raw = security.new_token(REFRESH_PREFIX)
        now = utcnow()
        await repo.add(
            session,
            RefreshSession(
                family_id=family_id,
                user_id=user.id,
                token_hash=security.hash_token(raw),
                expires_at=now + timedelta(seconds=self.refresh_ttl),
                created_at=now,
            ),
        )
        return TokenPair(access_token=access, refresh_token=raw, expires_in=self.access_ttl)

    # --- signing keys --------------------------------------------------------------------------------
    async def signing_key(self, session: AsyncSession) -> SigningKey:
        """The key new tokens are signed with; the first caller ever creates it."""
        key = await repo.current_signing_key(session)
        if key is not None:
            return key
        # Replicas starting together would each mint a key; the lock makes the second one find the first.
        await repo.advisory_xact_lock(session, _SIGNING_KEY_LOCK)
        key = await repo.current_signing_key(session)
        if key is not None:
            return key
        return await self._new_signing_key(session)

    async def rotate_signing_key(self, session: AsyncSession) -> SigningKey:
        """Retire the current key (it stays in the JWKS for one access-token lifetime) and start a new one."""
        await repo.advisory_xact_lock(session, _SIGNING_KEY_LOCK)
        await repo.retire_signing_keys(session, utcnow())
        return await self._new_signing_key(session)

    async def _new_signing_key(self, session: AsyncSession) -> SigningKey:
        kid, pem = security.generate_signing_key()
        key = SigningKey(kid=kid, private_pem=pem, created_at=utcnow())
        await repo.add(session, key)
        log.info("created signing key %s", kid)
        return key

    async def jwks(self, session: AsyncSession) -> Jwks:
        await self.signing_key(session)
        keys = await repo.published_signing_keys(session, utcnow() - timedelta(seconds=self.access_ttl))
        return Jwks(keys=[security.public_jwk(k.private_pem, k.kid) for k in keys])

    # --- principals ----------------------------------------------------------------------------------
    async def me(self, session: AsyncSession, *, user_id: str, org_id: str) -> MePublic:
        user = await repo.get_org_user(session, org_id, user_id)
        org = await repo.get_organization(session, org_id) if user is not None else None
        if user is None or org is None or not user.is_active:
            # The token named a principal that is gone (or never matched): the caller must log in again.
            raise Unauthorized("user not found or inactive", code="invalid_principal")
        return MePublic(user=user_public(user), role=_role(user.role), organization=org_public(org))

    async def create_organization(
        self, session: AsyncSession, name: str, *, plan: str = "free"
    ) -> Organization:
        name = clean_name(name, field="name")
        if plan not in PLANS:
            raise Invalid(f"plan: must be one of {', '.join(PLANS)}", field="plan")
        base = slugify(name) or "org"
        slug = base
        while await repo.slug_taken(session, slug):
            slug = f"{base[:54]}-{secrets.token_hex(4)}"
        org = Organization(name=name, slug=slug, plan=plan, settings={}, created_at=utcnow())
        await repo.add(session, org)
        return org

    async def create_user(
        self,
        session: AsyncSession,
        *,
        org_id: str,
        email: str,
        password: str,
        role: str = "user",
        name: str = "",
    ) -> User:
        email = normalize_email(email)
        if role not in ROLES:
            raise Invalid(f"role: must be one of {', '.join(ROLES)}", field="role")
        if not password or "\x00" in password or len(password) > 1024:
            raise Invalid("password: must be 1 to 1024 characters without NUL", field="password")
        if await repo.get_user_by_email(session, email) is not None:
            raise Conflict("email: a user with this email exists", field="email", code="email_taken")
        user = User(
            org_id=org_id,
            email=email,
            name=clean_name(name, field="name") if name else "",
            role=role,
            password_hash=await asyncio.to_thread(security.hash_password, password),
            is_active=True,
            created_at=utcnow(),
        )
        await repo.add(session, user)
        return user

    async def bootstrap(self, session: AsyncSession, *, org_name: str, admin_email: str) -> BootstrapReply:
        """First start: one organization and its admin, with a generated password returned once.

        Concurrent callers are serialised by an advisory lock, so exactly one of them creates anything.
        """
        org_name = clean_name(org_name, field="org_name")
        admin_email = normalize_email(admin_email, field="admin_email")
        await repo.advisory_xact_lock(session, _BOOTSTRAP_LOCK)
        existing = await repo.first_organization(session)
        if existing is not None:
            admin = await repo.first_admin(session, existing.id)
            return BootstrapReply(created=False, org_id=existing.id, admin_email=admin.email if admin else "")
        org = await self.create_organization(session, org_name)
        password = secrets.token_urlsafe(BOOTSTRAP_PASSWORD_BYTES)
        admin = await self.create_user(
            session, org_id=org.id, email=admin_email, password=password, role="admin", name="Administrator"
        )
        log.info("bootstrapped organization %s with admin %s", org.id, admin.id)
        return BootstrapReply(created=True, org_id=org.id, admin_email=admin.email, password=password)


_ROLES: dict[str, Role] = {"admin": "admin", "user": "user", "viewer": "viewer"}


def _role(value: str) -> Role:
    return _ROLES[value]  # the check constraint keeps anything else out of the table


def user_public(user: User) -> UserPublic:
    return UserPublic(id=user.id, email=user.email, name=user.name, role=_role(user.role), org_id=user.org_id)


def org_public(org: Organization) -> OrganizationPublic:
    return OrganizationPublic(id=org.id, name=org.name, slug=org.slug, plan=org.plan)
