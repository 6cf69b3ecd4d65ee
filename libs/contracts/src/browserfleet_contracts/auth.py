"""Identity: login, tokens, the current principal, JWKS, first-start bootstrap."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import email_validator
from pydantic import BaseModel, EmailStr, Field

from .common import Contract, OrgScoped, Role

# Self-hosted installs name their machines `*.local`, and the bootstrap admin is admin@browserfleet.local:
# email-validator rejects that special-use domain by default (its documented knob is this list), which
# would make the first admin unable to log in.
if "local" in email_validator.SPECIAL_USE_DOMAIN_NAMES:
    email_validator.SPECIAL_USE_DOMAIN_NAMES.remove("local")


class LoginRequest(Contract):
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024)


class LoginCommand(LoginRequest):
    client_ip: str | None = None


class RefreshRequest(Contract):
    refresh_token: str = Field(min_length=1, max_length=512)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class MeRequest(Contract):
    user_id: str
    org_id: str


class OrganizationPublic(BaseModel):
    id: str
    name: str
    slug: str
    plan: str


class UserPublic(BaseModel):
    id: str
    email: str
    name: str
    role: Role
    org_id: str


class MePublic(BaseModel):
    user: UserPublic
    role: Role
    organization: OrganizationPublic


class Jwks(BaseModel):
    keys: list[dict[str, Any]]


class BootstrapRequest(Contract):
    org_name: str = "Default"
    admin_email: EmailStr = "admin@browserfleet.local"


class BootstrapReply(BaseModel):
    """`password` is set only on the call that created the admin; it is never stored or logged."""

    created: bool
    org_id: str
    admin_email: str
    password: str | None = None


# Claims every access token carries; `typ` is unique to access tokens.
ACCESS_TOKEN_TYP = "access+jwt"
TOKEN_ISSUER = "browserfleet-auth"
TOKEN_AUDIENCE = "browserfleet"


# --- API keys ------------------------------------------------------------------------------------
API_KEY_PREFIX = "sk_api_"
ApiKeyScope = Literal["tasks:read", "tasks:write", "credentials:write", "webhooks:admin", "workers:admin"]
API_KEY_SCOPES: tuple[str, ...] = (
    "tasks:read",
    "tasks:write",
    "credentials:write",
    "webhooks:admin",
    "workers:admin",
)
Plan = Literal["free", "pro", "enterprise"]


class ApiKeyCreate(Contract):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[ApiKeyScope] = Field(min_length=1, max_length=len(API_KEY_SCOPES))
    expires_at: datetime | None = Field(default=None, description="optional; the key stops working then")


class ApiKeyPublic(BaseModel):
    id: str
    org_id: str
    name: str
    prefix: str = Field(description="the first characters of the key, to recognise it")
    scopes: list[str]
    expires_at: datetime | None
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    """The only answer that ever carries the key itself."""

    key: str


class CreateApiKeyRequest(OrgScoped):
    key: ApiKeyCreate


class AuthenticateApiKeyRequest(Contract):
    key: str = Field(min_length=1, max_length=200)


class ApiKeyPrincipal(BaseModel):
    """What the gateway needs to act for a key: whose it is and what it may do."""

    org_id: str
    key_id: str
    scopes: list[str]
    plan: str
    expires_at: datetime | None


class ApiKeyRevoked(BaseModel):
    """Broadcast on `subjects.Auth.API_KEY_REVOKED` (core NATS) so every gateway drops its cache entry."""

    key_id: str
    org_id: str


# --- organizations (platform operator) ---------------------------------------------------------------
class OrganizationCreate(Contract):
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(default=None, min_length=1, max_length=63)
    plan: Plan = "free"
    settings: dict[str, Any] = Field(default_factory=dict)
    admin_email: str | None = Field(
        default=None,
        max_length=320,
        description="creates the org's first admin; the password is returned once",
    )


class OrganizationUpdate(Contract):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    slug: str | None = Field(default=None, min_length=1, max_length=63)
    plan: Plan | None = None
    settings: dict[str, Any] | None = None


class OrganizationDetail(OrganizationPublic):
    settings: dict[str, Any]
    created_at: datetime


class OrganizationCreated(OrganizationDetail):
    """`admin_password` is set only when `admin_email` was given, in this answer only."""

    admin_email: str | None = None
    admin_password: str | None = None


class CreateOrganizationRequest(OrgScoped):
    organization: OrganizationCreate


class UpdateOrganizationRequest(OrgScoped):
    id: str = Field(min_length=1, max_length=64)
    organization: OrganizationUpdate


# --- users (org admins) ------------------------------------------------------------------------------
class UserCreate(Contract):
    email: str = Field(min_length=3, max_length=320)
    name: str = Field(default="", max_length=200)
    role: Role = "user"
    password: str | None = Field(
        default=None,
        min_length=12,
        max_length=1024,
        description="omit to invite: a one-time password is returned",
    )


class UserUpdate(Contract):
    name: str | None = Field(default=None, max_length=200)
    role: Role | None = None
    is_active: bool | None = Field(default=None, description="false deactivates and ends their sessions")


class UserDetail(UserPublic):
    is_active: bool
    last_login: datetime | None
    created_at: datetime


class UserCreated(UserDetail):
    """`password` is set only for an invite (no password given) and appears in this answer only."""

    password: str | None = None


class CreateUserRequest(OrgScoped):
    user: UserCreate


class UpdateUserRequest(OrgScoped):
    id: str = Field(min_length=1, max_length=64)
    user: UserUpdate


# --- audit log ---------------------------------------------------------------------------------------
class AuditEntry(BaseModel):
    id: int
    at: datetime
    action: str
    outcome: str
    org_id: str | None
    actor_user_id: str | None
    actor_api_key_id: str | None
    client_ip: str | None
    target: str | None
    detail: dict[str, Any]


class ListAuditRequest(OrgScoped):
    action: str | None = Field(default=None, max_length=64)
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=40, description="next_cursor of the previous page")
