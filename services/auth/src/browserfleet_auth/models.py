"""Tables of the `auth` schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from browserfleet_core.db import new_id, schema_metadata, utcnow
from browserfleet_core.outbox import outbox_table
from sqlalchemy import JSON, BigInteger, CheckConstraint, Column, DateTime, ForeignKey, Identity, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "auth"

PLANS: tuple[str, ...] = ("free", "pro", "enterprise")
ROLES: tuple[str, ...] = ("admin", "user", "viewer")


class AuthBase(SQLModel):
    metadata = schema_metadata(SCHEMA)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Organization(AuthBase, table=True):
    __tablename__ = "organizations"
    __table_args__ = (CheckConstraint(_in("plan", PLANS), name="plan"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    name: str = Field(max_length=200)
    slug: str = Field(max_length=63, unique=True)
    plan: str = Field(default="free", max_length=16)
    settings: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False, server_default="{}"),
    )
    # An OrgPolicy as JSON, written only through AuthService.update_org_policy (validated, typed on the way
    # out); kept apart from the operator's free-form `settings` so neither can overwrite the other.
    policy: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False, server_default="{}"),
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class User(AuthBase, table=True):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(
        sa_column=Column(
            String(36),
            ForeignKey(f"{SCHEMA}.organizations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    # Stored NFKC-normalised and lower-cased (see service.normalize_email), so unique means unique.
    email: str = Field(max_length=320, unique=True)
    name: str = Field(default="", max_length=200)
    role: str = Field(default="user", max_length=16)
    password_hash: str = Field(sa_column=Column(Text, nullable=False))
    is_active: bool = True
    # The platform operator manages organizations (DESIGN.md §5); the bootstrap admin is the first one.
    platform_operator: bool = Field(default=False, sa_column_kwargs={"server_default": "false"})
    last_login: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class RefreshSession(AuthBase, table=True):
    """One refresh token. Rotation chains tokens into a family; reusing a spent one revokes the family."""

    __tablename__ = "refresh_sessions"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    family_id: str = Field(max_length=36, index=True)
    user_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    token_hash: str = Field(max_length=64, unique=True)
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class SigningKey(AuthBase, table=True):
    """Ed25519 keys for access tokens; `kid` is the RFC 7638 thumbprint of the public key."""

    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True, max_length=64)
    private_pem: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    retired_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class ApiKey(AuthBase, table=True):
    """`sk_api_…` keys: 256 random bits, stored as SHA-256 (see CONTRIBUTING.md), shown once."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(
        sa_column=Column(
            String(36),
            ForeignKey(f"{SCHEMA}.organizations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True)
    scopes: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False, server_default="[]"),
    )
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_by: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    last_used_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class AuditLog(AuthBase, table=True):
    """Append-only record of security-relevant actions. `org_id` is not a foreign key: the record of an
    organization's deletion outlives the organization."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    action: str = Field(max_length=64, index=True)
    outcome: str = Field(max_length=16)
    org_id: str | None = Field(default=None, max_length=36, index=True)
    actor_user_id: str | None = Field(default=None, max_length=36)
    actor_api_key_id: str | None = Field(default=None, max_length=36)
    client_ip: str | None = Field(default=None, max_length=64)
    target: str | None = Field(default=None, max_length=320)
    detail: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False, server_default="{}"),
    )


class LoginThrottle(AuthBase, table=True):
    """Failed sign-ins per account (`email:<normalised>`) or client address (`ip:<addr>`), shared by every
    auth replica through the database."""

    __tablename__ = "login_throttle"

    key: str = Field(primary_key=True, max_length=400)
    failures: int = 0
    last_failure_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    locked_until: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


# Organization events (created, plan changed, ...) will go out through it; it exists now so the first
# such change needs no migration of its own.
outbox = outbox_table(AuthBase.metadata)
