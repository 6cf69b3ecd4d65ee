"""Tables of the `auth` schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from browserfleet_core.db import new_id, schema_metadata, utcnow
from browserfleet_core.outbox import outbox_table
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "auth"

PLANS: tuple[str, ...] = ("free", "pro", "enterprise")
ROLES: tuple[str, ...] = ("admin", "user", "viewer")


class AuthBase(SQLModel):
    metadata = schema_metadata(SCHEMA)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _user_fk(ondelete: str = "CASCADE", *, nullable: bool = False, **kw: Any) -> Column[Any]:
    return Column(String(36), ForeignKey(f"{SCHEMA}.users.id", ondelete=ondelete), nullable=nullable, **kw)


def _org_fk(**kw: Any) -> Column[Any]:
    return Column(
        String(36), ForeignKey(f"{SCHEMA}.organizations.id", ondelete="CASCADE"), nullable=False, **kw
    )


def _json(default: str) -> Column[Any]:
    return Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False, server_default=default)


def _at(*, nullable: bool = False, **kw: Any) -> Column[Any]:
    return Column(DateTime(timezone=True), nullable=nullable, **kw)


class Organization(AuthBase, table=True):
    __tablename__ = "organizations"
    __table_args__ = (CheckConstraint(_in("plan", PLANS), name="plan"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    slug: str = Field(max_length=63, unique=True)
    plan: str = Field(default="free", max_length=16)
    settings: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=_json("{}"),
    )
    # An OrgPolicy as JSON, written only through AuthService.update_org_policy (validated, typed on the way
    # out); kept apart from the operator's free-form `settings` so neither can overwrite the other.
    policy: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=_json("{}"),
    )
    # every member signs in with a second factor (enrolling at their next sign-in)
    mfa_required: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default="false")
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=_at())


class User(AuthBase, table=True):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_in("role", ROLES), name="role"),
        UniqueConstraint("org_id", "sso_subject", name="users_org_sso_subject"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(sa_column=_org_fk(index=True))
    # Stored NFKC-normalised and lower-cased (see service.normalize_email), so unique means unique.
    email: str = Field(max_length=320, unique=True)
    name: str = Field(default="", max_length=200)
    role: str = Field(default="user", max_length=16)
    password_hash: str = Field(sa_column=Column(Text, nullable=False))
    is_active: bool = True
    # The platform operator manages organizations (DESIGN.md §5); the bootstrap admin is the first one.
    platform_operator: bool = Field(default=False, sa_column_kwargs={"server_default": "false"})
    last_login: datetime | None = Field(default=None, sa_column=_at(nullable=True))
    # access tokens issued before this instant no longer count (set on deactivation and MFA reset); the
    # gateway reads it through svc.auth.user_state
    tokens_valid_after: datetime | None = Field(default=None, sa_column=_at(nullable=True))
    # the identity provider's `sub` for this user, once they signed in with SSO
    sso_subject: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_at())


class RefreshSession(AuthBase, table=True):
    """One refresh token. Rotation chains tokens into a family; reusing a spent one revokes the family."""

    __tablename__ = "refresh_sessions"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    family_id: str = Field(max_length=36, index=True)
    user_id: str = Field(sa_column=_user_fk(index=True))
    token_hash: str = Field(max_length=64, unique=True)
    expires_at: datetime = Field(sa_column=_at())
    used_at: datetime | None = Field(default=None, sa_column=_at(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=_at(nullable=True))
    # how the family's sign-in was made and when its second factor was checked: refreshed access tokens
    # carry the same, so a refresh never mints a second factor it did not have
    amr: list[str] = Field(
        default_factory=list,
        sa_column=_json("[]"),
    )
    mfa_at: datetime | None = Field(default=None, sa_column=_at(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_at())


class SigningKey(AuthBase, table=True):
    """Ed25519 keys for access tokens; `kid` is the RFC 7638 thumbprint of the public key."""

    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True, max_length=64)
    private_pem: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_at())
    retired_at: datetime | None = Field(default=None, sa_column=_at(nullable=True))


class ApiKey(AuthBase, table=True):
    """`sk_api_…` keys: 256 random bits, stored as SHA-256 (see CONTRIBUTING.md), shown once."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(sa_column=_org_fk(index=True))
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True)
    scopes: list[str] = Field(
        default_factory=list,
        sa_column=_json("[]"),
    )
    expires_at: datetime | None = Field(default=None, sa_column=_at(nullable=True))
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_at())
    last_used_at: datetime | None = Field(default=None, sa_column=_at(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=_at(nullable=True))


class AuditLog(AuthBase, table=True):
    """Append-only record of security-relevant actions. `org_id` is not a foreign key: the record of an
    organization's deletion outlives the organization."""

    __tablename__ = "audit_log"
    # The call-entry statements look an entry up by (org_id, request_id). With only single-column indexes a
    # cached generic plan could probe org_id's and walk every entry the organization ever wrote (1,870-2,100
    # index entries per task in a benchmark's one org, growing with the log): this one is exact whatever plan.
    # It ends with `id`: the first entry of a call (`min(id)`, the close) is the index's first for the pair, never
    # a walk of the primary key from the oldest entry until the call's (the newest) turns up.
    # Pages keep 30 % free (migration 0007): an entry's close, moments after its open, then fits beside it as
    # a HOT update (no index entry written); on full pages most closes wrote a new version elsewhere.
    __table_args__ = (
        Index("ix_audit_log_request_id_org_id", "request_id", "org_id", "id"),
        {"postgresql_with": {"fillfactor": 70}},
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    at: datetime = Field(sa_column=_at(index=True))
    action: str = Field(max_length=64, index=True)
    outcome: str = Field(max_length=16)
    org_id: str | None = Field(default=None, max_length=36, index=True)
    actor_user_id: str | None = Field(default=None, max_length=36)
    actor_api_key_id: str | None = Field(default=None, max_length=36)
    client_ip: str | None = Field(default=None, max_length=64)
    target: str | None = Field(default=None, max_length=320)
    detail: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=_json("{}"),
    )
    # the gateway's call this entry records (X-Request-ID), its `METHOD /template` and answer's status
    request_id: str | None = Field(default=None, max_length=64)
    route: str | None = Field(default=None, max_length=200)
    status: int | None = Field(default=None)


class LoginThrottle(AuthBase, table=True):
    """Failed sign-ins per account (`email:<normalised>`) or client address (`ip:<addr>`), shared by every
    auth replica through the database."""

    __tablename__ = "login_throttle"

    key: str = Field(primary_key=True, max_length=400)
    failures: int = 0
    last_failure_at: datetime = Field(sa_column=_at())
    locked_until: datetime | None = Field(default=None, sa_column=_at(nullable=True))


class TotpFactor(AuthBase, table=True):
    """A user's TOTP secret (RFC 6238, 30 s steps, 6 digits). It must be readable to check a code, so it is
    stored as is, like the signing keys: the auth schema is the secret. `last_step` is the time step of the
    last code accepted: a code of that step or an earlier one is refused (no replay)."""

    __tablename__ = "mfa_totp"

    user_id: str = Field(sa_column=_user_fk(primary_key=True))
    secret: str = Field(max_length=64)
    confirmed_at: datetime | None = Field(default=None, sa_column=_at(nullable=True))
    last_step: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_at())


class RecoveryCode(AuthBase, table=True):
    """Single-use codes of 80 random bits, stored as SHA-256 (high entropy: see CONTRIBUTING.md)."""

    __tablename__ = "mfa_recovery_codes"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    user_id: str = Field(sa_column=_user_fk(index=True))
    code_hash: str = Field(max_length=64, unique=True)
    used_at: datetime | None = Field(default=None, sa_column=_at(nullable=True))


class MfaChallenge(AuthBase, table=True):
    """A sign-in whose first factor passed and whose second is due; `amr` says how the first was made."""

    __tablename__ = "mfa_challenges"

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(sa_column=_user_fk(index=True))
    amr: list[str] = Field(default_factory=list, sa_column=_json("[]"))
    expires_at: datetime = Field(sa_column=_at())
    used_at: datetime | None = Field(default=None, sa_column=_at(nullable=True))


class SsoConfig(AuthBase, table=True):
    """An organization's OpenID provider (one per organization)."""

    __tablename__ = "sso_settings"

    org_id: str = Field(sa_column=_org_fk(primary_key=True))
    issuer: str = Field(max_length=500)
    client_id: str = Field(max_length=255)
    client_secret_name: str = Field(max_length=64)
    scopes: list[str] = Field(default_factory=list, sa_column=_json("[]"))
    default_role: str = Field(default="user", max_length=16)
    role_claim: str | None = Field(default=None, max_length=100)
    role_mapping: dict[str, str] = Field(default_factory=dict, sa_column=_json("{}"))
    sso_only: bool = False
    break_glass_user_id: str | None = Field(default=None, sa_column=_user_fk("SET NULL", nullable=True))
    enabled: bool = True
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_at())


class SsoDomain(AuthBase, table=True):
    """An email domain an organization's IdP may assert: the primary key makes a domain one org's only."""

    __tablename__ = "sso_domains"

    domain: str = Field(primary_key=True, max_length=253)
    org_id: str = Field(sa_column=_org_fk(index=True))


class SsoState(AuthBase, table=True):
    """One started OIDC sign-in, keyed by the SHA-256 of its `state`: spent (deleted) by its callback."""

    __tablename__ = "sso_states"

    state_hash: str = Field(primary_key=True, max_length=64)
    org_id: str = Field(sa_column=_org_fk())
    nonce: str = Field(max_length=128)
    code_verifier: str = Field(max_length=128)
    redirect_uri: str = Field(max_length=2000)
    expires_at: datetime = Field(sa_column=_at())


class SsoHandoffCode(AuthBase, table=True):
    """The one-time code a finished OIDC sign-in leaves for `sso_exchange` (spent by deleting it)."""

    __tablename__ = "sso_handoffs"

    code_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(sa_column=_user_fk())
    amr: list[str] = Field(default_factory=list, sa_column=_json("[]"))
    expires_at: datetime = Field(sa_column=_at())


# Organization events (created, plan changed, ...) will go out through it; it exists now so the first
# such change needs no migration of its own.
outbox = outbox_table(AuthBase.metadata)
