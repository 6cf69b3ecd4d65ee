"""Identity logic: login, refresh-token rotation, logout, the current principal, JWKS, bootstrap.

Takes an `AsyncSession` inside the caller's transaction and never commits. Argon2 runs in a worker
thread: it is deliberately slow (tens of milliseconds, 64 MiB) and would otherwise stall every other
request this process is serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_contracts.auth import (
    API_KEY_PREFIX,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPrincipal,
    ApiKeyPublic,
    AuditEntry,
    BootstrapReply,
    Jwks,
    ListAuditRequest,
    MePublic,
    OrganizationCreate,
    OrganizationCreated,
    OrganizationDetail,
    OrganizationPublic,
    OrgPolicy,
    TokenPair,
    UpdateOrganizationRequest,
    UpdateUserRequest,
    UserCreate,
    UserCreated,
    UserDetail,
    UserPublic,
)
from browserfleet_contracts.common import Actor, Page, Role
from browserfleet_contracts.events import EventEnvelope
from browserfleet_contracts.workers import WorkerIdentity
from browserfleet_core import security
from browserfleet_core.db import new_id, utcnow
from browserfleet_core.errors import Conflict, Forbidden, Invalid, NotFound, RateLimited, Unauthorized
from browserfleet_core.outbox import OutboxRelay
from sqlmodel.ext.asyncio.session import AsyncSession

from . import repository as repo
from .models import (
    PLANS,
    ROLES,
    ApiKey,
    AuditLog,
    LoginThrottle,
    Organization,
    RefreshSession,
    SigningKey,
    User,
)

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
    """One spelling per mailbox: NFKC (full-width and compatibility forms fold), trimmed, case-folded."""
    if "\x00" in raw:
        raise Invalid(f"{field}: must not contain NUL", field=field)
    email = unicodedata.normalize("NFKC", raw).strip().casefold()
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


class LoginFailed(Unauthorized):
    """Wrong email, wrong password or inactive account: one answer for all three. The caller commits the
    failure counters and the audit row before answering."""

    def __init__(self) -> None:
        super().__init__(INVALID_CREDENTIALS, code="invalid_credentials")


class LoginThrottled(RateLimited):
    """Too many failed sign-ins for this account or this address: wait `retry_after` seconds. Says nothing
    about which one, nor whether the account exists."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed sign-ins; try again later", code="login_throttled")
        self.retry_after = max(1, math.ceil(retry_after))


# Raised inside a transaction whose writes must be committed anyway (see handlers.py).
COMMIT_THEN_RAISE: tuple[type[Exception], ...] = (LoginFailed, LoginThrottled)


@dataclass(frozen=True)
class BruteForcePolicy:
    """Failed sign-ins per account and per client address: after `slow_after` failures each further
    attempt must wait twice as long as the previous one (up to `max_delay_seconds`); after `lock_after_*`
    failures the key is locked for `lock_seconds`. Failures older than `window_seconds` are forgotten."""

    slow_after: int = 3
    max_delay_seconds: float = 30.0
    lock_after_account: int = 10
    lock_after_ip: int = 50
    lock_seconds: float = 900.0
    window_seconds: float = 900.0

    def wait_seconds(self, row: LoginThrottle, now: datetime) -> float:
        if row.locked_until is not None and row.locked_until > now:
            return (row.locked_until - now).total_seconds()
        if (now - row.last_failure_at).total_seconds() > self.window_seconds:
            return 0.0
        if row.failures < self.slow_after:
            return 0.0
        delay = min(self.max_delay_seconds, float(2 ** (row.failures - self.slow_after)))
        return max(0.0, delay - (now - row.last_failure_at).total_seconds())


class AuthService:
    def __init__(
        self,
        *,
        access_token_ttl_seconds: int = 900,
        refresh_token_ttl_seconds: int = 604_800,
        verify_password: PasswordVerifier = security.verify_password,
        brute_force: BruteForcePolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        relay: OutboxRelay | None = None,
    ) -> None:
        self.access_ttl = access_token_ttl_seconds
        self.refresh_ttl = refresh_token_ttl_seconds
        self._verify_password = verify_password
        self.brute_force = brute_force or BruteForcePolicy()
        self.now = clock
        self.relay = relay

    # --- tokens ------------------------------------------------------------------------------------
    async def login(
        self, session: AsyncSession, email: str, password: str, *, client_ip: str | None = None
    ) -> TokenPair:
        """Failures raise `LoginFailed` / `LoginThrottled`, whose audit rows and counters the caller must
        commit before answering (they are the point of the exercise)."""
        email = normalize_email(email)
        now = self.now()
        keys = [f"email:{email}"] + ([f"ip:{client_ip}"] if client_ip else [])
        throttles = await repo.get_throttles_for_update(session, keys)
        wait = max((self.brute_force.wait_seconds(t, now) for t in throttles.values()), default=0.0)
        user = await repo.get_user_by_email(session, email)
        org_id = user.org_id if user is not None else None
        if wait > 0:
            await self.audit(
                session, "login.throttled", "denied", org_id=org_id, client_ip=client_ip, target=email
            )
            raise LoginThrottled(wait)
        # An unknown email still pays for one argon2 verification (against a dummy hash), so response
        # time does not tell which emails have accounts.
        stored = user.password_hash if user is not None else None
        ok = await asyncio.to_thread(self._verify_password, stored, password)
        if not ok or user is None or not user.is_active:
            for key in keys:
                await repo.add_login_failure(
                    session,
                    key,
                    now,
                    window_start=now - timedelta(seconds=self.brute_force.window_seconds),
                    lock_after=self.brute_force.lock_after_ip
                    if key.startswith("ip:")
                    else self.brute_force.lock_after_account,
                    locked_until=now + timedelta(seconds=self.brute_force.lock_seconds),
                )
            await self.audit(
                session, "login.failed", "failure", org_id=org_id, client_ip=client_ip, target=email
            )
            raise LoginFailed()
        await repo.clear_throttle(session, keys[0])
        if security.password_needs_rehash(user.password_hash):
            user.password_hash = await asyncio.to_thread(security.hash_password, password)
        user.last_login = now
        session.add(user)
        await self.audit(
            session, "login", "success", org_id=user.org_id, actor_user_id=user.id, client_ip=client_ip
        )
        return await self._issue(session, user, family_id=new_id())

    async def refresh(self, session: AsyncSession, refresh_token: str) -> TokenPair:
        current = await self._locked_refresh_session(session, refresh_token)
        now = utcnow()
        if current.used_at is not None:
            await repo.revoke_family(session, current.family_id, now)
            log.warning(
                "refresh token reuse: revoked family %s of user %s", current.family_id, current.user_id
            )
            owner = await repo.get_user(session, current.user_id)
            await self.audit(
                session,
                "session.family_revoked",
                "success",
                org_id=owner.org_id if owner else None,
                actor_user_id=current.user_id,
                target=current.family_id,
                detail={"reason": "refresh token reuse"},
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
        if current is not None and await repo.revoke_family(session, current.family_id, utcnow()):
            owner = await repo.get_user(session, current.user_id)
            await self.audit(
                session,
                "logout",
                "success",
                org_id=owner.org_id if owner else None,
                actor_user_id=current.user_id,
                target=current.family_id,
            )

    async def _locked_refresh_session(self, session: AsyncSession, token: str) -> RefreshSession:
        found = None
        if token.startswith(REFRESH_PREFIX):
            found = await repo.get_refresh_session_for_update(session, security.hash_token(token))
        if found is None:
            raise Unauthorized("unknown refresh token", code="invalid_refresh_token")
        return found

    async def _issue(self, session: AsyncSession, user: User, *, family_id: str) -> TokenPair:
        key = await self.signing_key(session)
        org = await repo.get_organization(session, user.org_id)
        access, _jti = security.sign_access_token(
            key.private_pem,
            key.kid,
            sub=user.id,
            org=user.org_id,
            role=user.role,
            ttl_seconds=self.access_ttl,
            extra={"plan": org.plan} if org is not None else None,  # per-plan limits without a lookup
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
        # The first organization's first admin operates the platform (creates and removes organizations).
        admin.platform_operator = True
        session.add(admin)
        log.info("bootstrapped organization %s with admin %s", org.id, admin.id)
        return BootstrapReply(created=True, org_id=org.id, admin_email=admin.email, password=password)

    # --- audit ---------------------------------------------------------------------------------------
    async def audit(
        self,
        session: AsyncSession,
        action: str,
        outcome: str,
        *,
        org_id: str | None = None,
        actor: Actor | None = None,
        actor_user_id: str | None = None,
        client_ip: str | None = None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """One audit row, in the caller's transaction: it exists exactly when the change it records does."""
        row = AuditLog(
            at=self.now(),
            action=action,
            outcome=outcome,
            org_id=org_id if org_id is not None else (actor.org_id if actor else None),
            actor_user_id=actor_user_id if actor_user_id is not None else (actor.user_id if actor else None),
            actor_api_key_id=actor.api_key_id if actor else None,
            client_ip=(client_ip or (actor.client_ip if actor else None) or None),
            target=target[:320] if target else None,
            detail=detail or {},
        )
        await repo.add(session, row)

    async def list_audit(self, session: AsyncSession, req: ListAuditRequest) -> Page[AuditEntry]:
        _require_admin(req.actor)
        before: int | None = None
        if req.cursor:
            if not req.cursor.isdigit():
                raise Invalid("cursor: not a cursor from this list", field="cursor")
            before = int(req.cursor)
        rows = await repo.list_audit(
            session,
            req.actor.org_id,
            action=req.action,
            since=req.since,
            until=req.until,
            before_id=before,
            limit=req.limit + 1,
        )
        items = [audit_public(r) for r in rows[: req.limit]]
        more = len(rows) > req.limit
        return Page[AuditEntry](items=items, next_cursor=str(items[-1].id) if more and items else None)

    # --- API keys ------------------------------------------------------------------------------------
    async def create_api_key(self, session: AsyncSession, actor: Actor, body: ApiKeyCreate) -> ApiKeyCreated:
        _require_admin(actor)
        name = clean_name(body.name, field="name")
        now = self.now()
        if body.expires_at is not None:
            if body.expires_at.tzinfo is None:
                raise Invalid("expires_at: needs a timezone", field="expires_at")
            if body.expires_at <= now:
                raise Invalid("expires_at: must be in the future", field="expires_at")
        raw = security.new_token(API_KEY_PREFIX)
        key = ApiKey(
            org_id=actor.org_id,
            name=name,
            prefix=raw[: len(API_KEY_PREFIX) + 4],
            key_hash=security.hash_token(raw),
            scopes=sorted(set(body.scopes)),
            expires_at=body.expires_at,
            created_by=actor.user_id or actor.api_key_id,
            created_at=now,
        )
        await repo.add(session, key)
        await self.audit(
            session, "api_key.created", "success", actor=actor, target=key.id, detail={"scopes": key.scopes}
        )
        return ApiKeyCreated(**api_key_public(key).model_dump(), key=raw)

    async def list_api_keys(self, session: AsyncSession, actor: Actor) -> list[ApiKeyPublic]:
        _require_admin(actor)
        return [api_key_public(k) for k in await repo.org_api_keys(session, actor.org_id)]

    async def revoke_api_key(self, session: AsyncSession, actor: Actor, key_id: str) -> ApiKeyPublic:
        """Idempotent; another org's key is a 404. The caller broadcasts the revocation after commit."""
        _require_admin(actor)
        key = await repo.get_org_api_key(session, actor.org_id, key_id)
        if key is None:
            raise NotFound("API key not found", code="api_key_not_found")
        if key.revoked_at is None:
            key.revoked_at = self.now()
            session.add(key)
            await self.audit(session, "api_key.revoked", "success", actor=actor, target=key.id)
        return api_key_public(key)

    async def authenticate_api_key(self, session: AsyncSession, raw: str) -> ApiKeyPrincipal:
        key = None
        if raw.startswith(API_KEY_PREFIX):
            key = await repo.get_api_key_by_hash(session, security.hash_token(raw))
        now = self.now()
        if (
            key is None
            or key.revoked_at is not None
            or (key.expires_at is not None and key.expires_at <= now)
        ):
            raise Unauthorized("invalid, revoked or expired API key", code="invalid_api_key")
        org = await repo.get_organization(session, key.org_id)
        if org is None:
            raise Unauthorized("invalid, revoked or expired API key", code="invalid_api_key")
        # The gateway caches a verified key briefly, so this write happens about once per key per second
        # at most; coarser still, once a minute is plenty for "last used".
        if key.last_used_at is None or now - key.last_used_at > timedelta(seconds=60):
            await repo.touch_api_key(session, key.id, now)
        return ApiKeyPrincipal(
            org_id=key.org_id,
            key_id=key.id,
            scopes=list(key.scopes),
            plan=org.plan,
            expires_at=key.expires_at,
        )

    # --- organizations (platform operator) -----------------------------------------------------------
    async def _require_operator(self, session: AsyncSession, actor: Actor) -> User:
        user = await repo.get_org_user(session, actor.org_id, actor.user_id) if actor.user_id else None
        if user is None or not user.is_active or not user.platform_operator:
            raise Forbidden("this needs the platform operator role", code="platform_operator_required")
        return user

    async def _operator_org(self, session: AsyncSession, actor: Actor, org_id: str) -> Organization:
        # To anyone but a platform operator an organization id names nothing: 404, never 403.
        user = await repo.get_org_user(session, actor.org_id, actor.user_id) if actor.user_id else None
        org = await repo.get_organization(session, org_id)
        if user is None or not user.platform_operator or not user.is_active or org is None:
            raise NotFound("organization not found", code="organization_not_found")
        return org

    async def list_organizations(self, session: AsyncSession, actor: Actor) -> list[OrganizationDetail]:
        await self._require_operator(session, actor)
        return [org_detail(o) for o in await repo.list_organizations(session)]

    async def create_org(
        self, session: AsyncSession, actor: Actor, body: OrganizationCreate
    ) -> OrganizationCreated:
        await self._require_operator(session, actor)
        name = clean_name(body.name, field="name")
        slug = normalize_slug(body.slug) if body.slug is not None else (slugify(name) or "org")
        if await repo.slug_taken(session, slug):
            raise Conflict("slug: an organization with this slug exists", field="slug", code="slug_taken")
        org = Organization(
            name=name, slug=slug, plan=body.plan, settings=_settings(body.settings), created_at=self.now()
        )
        await repo.add(session, org)
        await self.audit(
            session, "organization.created", "success", actor=actor, target=org.id, detail={"slug": slug}
        )
        created = OrganizationCreated(**org_detail(org).model_dump())
        if body.admin_email:
            password = secrets.token_urlsafe(BOOTSTRAP_PASSWORD_BYTES)
            admin = await self.create_user(
                session, org_id=org.id, email=body.admin_email, password=password, role="admin"
            )
            created.admin_email, created.admin_password = admin.email, password
        return created

    async def update_org(self, session: AsyncSession, req: UpdateOrganizationRequest) -> OrganizationDetail:
        org = await self._operator_org(session, req.actor, req.id)
        body = req.organization
        changed: dict[str, Any] = {}
        if body.name is not None:
            org.name = changed["name"] = clean_name(body.name, field="name")
        if body.slug is not None:
            slug = normalize_slug(body.slug)
            if slug != org.slug:
                if await repo.slug_taken(session, slug):
                    raise Conflict(
                        "slug: an organization with this slug exists", field="slug", code="slug_taken"
                    )
                org.slug = changed["slug"] = slug
        if body.plan is not None and body.plan != org.plan:
            org.plan = changed["plan"] = body.plan
        if body.settings is not None:
            org.settings = _settings(body.settings)
            changed["settings"] = True
        session.add(org)
        await session.flush()
        await self.audit(
            session, "organization.updated", "success", actor=req.actor, target=org.id, detail=changed
        )
        return org_detail(org)

    async def delete_org(self, session: AsyncSession, actor: Actor, org_id: str) -> None:
        """Removes the organization, its users, their sessions and its keys, and tells every service (an
        `organization.deleted` event through the outbox, in this same transaction)."""
        org = await self._operator_org(session, actor, org_id)
        if org.id == actor.org_id:
            raise Conflict("an operator cannot delete their own organization", code="own_organization")
        if self.relay is None:
            raise RuntimeError("organization deletion needs the outbox relay")
        await repo.delete_organization(session, org.id)
        event = EventEnvelope(
            id=f"{org.id}:organization.deleted",
            type="organization.deleted",
            org_id=org.id,
            occurred_at=self.now(),
            data={"organization_id": org.id, "slug": org.slug},
        )
        await self.relay.enqueue(
            session, subjects.event(org.id, "organization.deleted"), event, msg_id=event.id
        )
        await self.audit(
            session, "organization.deleted", "success", actor=actor, target=org.id, detail={"slug": org.slug}
        )

    # --- organization policy (org admins write it, every member reads it, workers enforce it) ---------
    async def get_org_policy(self, session: AsyncSession, actor: Actor) -> OrgPolicy:
        org = await repo.get_organization(session, actor.org_id)
        if org is None:
            raise NotFound("organization not found", code="organization_not_found")
        return org_policy(org)

    async def update_org_policy(self, session: AsyncSession, actor: Actor, policy: OrgPolicy) -> OrgPolicy:
        """Replaces the actor's own organization's policy (admins); the audit row records the new policy's
        shape (domains, evaluate, proxy server and the secret names it references, never a value)."""
        _require_admin(actor)
        org = await repo.get_organization(session, actor.org_id)
        if org is None:
            raise NotFound("organization not found", code="organization_not_found")
        before = org_policy(org)
        org.policy = policy.model_dump(mode="json")
        session.add(org)
        await session.flush()
        changed = sorted(k for k in OrgPolicy.model_fields if getattr(before, k) != getattr(policy, k))
        await self.audit(
            session,
            "organization.policy_updated",
            "success",
            actor=actor,
            target=org.id,
            detail={"changed": changed, **policy_summary(policy)},
        )
        log.info("organization %s policy updated (%s)", org.id, ", ".join(changed) or "no change")
        return policy

    async def org_policy_for_worker(
        self, session: AsyncSession, worker: WorkerIdentity, org_id: str
    ) -> OrgPolicy:
        """The policy a worker must enforce for a task of `org_id`. A worker bound to another organization
        learns nothing (404, as for an organization that does not exist)."""
        if worker.org_id is not None and worker.org_id != org_id:
            raise NotFound("organization not found", code="organization_not_found")
        org = await repo.get_organization(session, org_id)
        if org is None:
            raise NotFound("organization not found", code="organization_not_found")
        return org_policy(org)

    # --- users (org admins) --------------------------------------------------------------------------
    async def list_users(self, session: AsyncSession, actor: Actor) -> list[UserDetail]:
        _require_admin(actor)
        return [user_detail(u) for u in await repo.org_users(session, actor.org_id)]

    async def invite_user(self, session: AsyncSession, actor: Actor, body: UserCreate) -> UserCreated:
        _require_admin(actor)
        password = body.password or secrets.token_urlsafe(BOOTSTRAP_PASSWORD_BYTES)
        user = await self.create_user(
            session, org_id=actor.org_id, email=body.email, password=password, role=body.role, name=body.name
        )
        await self.audit(
            session, "user.created", "success", actor=actor, target=user.id, detail={"role": user.role}
        )
        return UserCreated(**user_detail(user).model_dump(), password=None if body.password else password)

    async def update_user(self, session: AsyncSession, req: UpdateUserRequest) -> UserDetail:
        actor = req.actor
        _require_admin(actor)
        user = await repo.get_org_user(session, actor.org_id, req.id)
        if user is None:
            raise NotFound("user not found", code="user_not_found")
        body = req.user
        losing_admin = (
            user.role == "admin"
            and user.is_active
            and ((body.role is not None and body.role != "admin") or body.is_active is False)
        )
        if losing_admin:
            admins = [
                u for u in await repo.org_users(session, actor.org_id) if u.role == "admin" and u.is_active
            ]
            if len(admins) <= 1:
                raise Conflict(
                    "the organization's last admin cannot be demoted or deactivated", code="last_admin"
                )
        if body.name is not None:
            user.name = clean_name(body.name, field="name") if body.name else ""
        if body.role is not None and body.role != user.role:
            await self.audit(
                session,
                "user.role_changed",
                "success",
                actor=actor,
                target=user.id,
                detail={"from": user.role, "to": body.role},
            )
            user.role = body.role
        if body.is_active is not None and body.is_active != user.is_active:
            user.is_active = body.is_active
            if not body.is_active:
                await repo.revoke_user_sessions(session, user.id, self.now())
            await self.audit(
                session,
                "user.deactivated" if not body.is_active else "user.reactivated",
                "success",
                actor=actor,
                target=user.id,
            )
        session.add(user)
        await session.flush()
        return user_detail(user)


_ROLES: dict[str, Role] = {"admin": "admin", "user": "user", "viewer": "viewer"}


def _role(value: str) -> Role:
    return _ROLES[value]  # the check constraint keeps anything else out of the table


def user_public(user: User) -> UserPublic:
    return UserPublic(id=user.id, email=user.email, name=user.name, role=_role(user.role), org_id=user.org_id)


def org_public(org: Organization) -> OrganizationPublic:
    return OrganizationPublic(id=org.id, name=org.name, slug=org.slug, plan=org.plan)


def _require_admin(actor: Actor) -> None:
    if actor.role != "admin":
        raise Forbidden("this needs the admin role", code="insufficient_role")


_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_SETTINGS_BYTES = 16_384


def normalize_slug(raw: str) -> str:
    """One spelling per slug: NFKC, trimmed, case-folded, then `[a-z0-9-]` only (no NUL, no look-alikes)."""
    if "\x00" in raw:
        raise Invalid("slug: must not contain NUL", field="slug")
    slug = unicodedata.normalize("NFKC", raw).strip().casefold()
    if not _SLUG.match(slug):
        raise Invalid(
            "slug: 1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit", field="slug"
        )
    return slug


def _settings(value: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(value)) > MAX_SETTINGS_BYTES:
        raise Invalid(f"settings: at most {MAX_SETTINGS_BYTES} bytes of JSON", field="settings")
    if "\\u0000" in json.dumps(value):
        raise Invalid("settings: must not contain NUL", field="settings")
    return value


def api_key_public(key: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=key.id,
        org_id=key.org_id,
        name=key.name,
        prefix=key.prefix,
        scopes=list(key.scopes),
        expires_at=key.expires_at,
        created_by=key.created_by,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


def audit_public(row: AuditLog) -> AuditEntry:
    assert row.id is not None
    return AuditEntry(
        id=row.id,
        at=row.at,
        action=row.action,
        outcome=row.outcome,
        org_id=row.org_id,
        actor_user_id=row.actor_user_id,
        actor_api_key_id=row.actor_api_key_id,
        client_ip=row.client_ip,
        target=row.target,
        detail=dict(row.detail),
    )


def org_policy(org: Organization) -> OrgPolicy:
    # written only by update_org_policy from a validated OrgPolicy; `{}` (the column default) is the default
    return OrgPolicy.model_validate(org.policy or {})


def policy_summary(policy: OrgPolicy) -> dict[str, Any]:
    return {
        "allowed_domains": policy.allowed_domains,
        "allow_evaluate": policy.allow_evaluate,
        "proxy_server": policy.proxy.server if policy.proxy is not None else None,
        "proxy_secrets": sorted(policy.secret_names()),
    }


def org_detail(org: Organization) -> OrganizationDetail:
    return OrganizationDetail(
        id=org.id,
        name=org.name,
        slug=org.slug,
        plan=org.plan,
        settings=dict(org.settings),
        created_at=org.created_at,
    )


def user_detail(user: User) -> UserDetail:
    return UserDetail(
        **user_public(user).model_dump(),
        is_active=user.is_active,
        last_login=user.last_login,
        created_at=user.created_at,
    )
