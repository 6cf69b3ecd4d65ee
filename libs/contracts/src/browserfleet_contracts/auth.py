"""Identity: login, tokens, the current principal, JWKS, first-start bootstrap."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import email_validator
from pydantic import BaseModel, EmailStr, Field, field_validator

from .common import Contract, OrgScoped, Role
from .tasks import DOMAIN_PATTERN, SECRET_REF, ProxySpec, secret_refs

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


# --- organization policy (org admins set it; every worker enforces it) ---------------------------------
class OrgPolicy(Contract):
    """What every task of the organization is held to, on top of its own settings (README "Safe browsing"):
    a request must satisfy both the task's and the organization's allowed domains; `evaluate` steps run
    when the operator allows them for all orgs or this policy does; the task's proxy wins, else this one.

    The proxy password is never stored here: it is a `{{ secrets.NAME }}` reference the vault releases to
    the worker running the task. The username may be plain text or a reference."""

    allowed_domains: list[Annotated[str, Field(pattern=DOMAIN_PATTERN)]] | None = Field(
        default=None,
        max_length=100,
        description="hosts any task of the org may reach (`example.com` also allows its subdomains; "
        "`*.example.com` only them); unset = any public host",
    )
    allow_evaluate: bool = Field(default=False, description="let this org's tasks run `evaluate` steps")
    proxy: ProxySpec | None = Field(
        default=None, description="upstream proxy for the org's tasks that name none (http:// only)"
    )

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, v: ProxySpec | None) -> ProxySpec | None:
        if v is None:
            return v
        if not v.server.startswith("http://"):
            raise ValueError("only http:// upstream proxies are supported")
        if secret_refs(v.server):
            raise ValueError("the proxy server cannot be a secret; put credentials in username/password")
        try:
            parts = urlsplit(v.server)
            parts.port  # noqa: B018 - raises on a port that is not a number or out of range
        except ValueError:
            raise ValueError("the proxy server is not a URL like http://proxy.example:3128") from None
        if not parts.hostname:
            raise ValueError("the proxy server is not a URL like http://proxy.example:3128")
        if "@" in parts.netloc:
            raise ValueError("the proxy server cannot carry credentials; use username and password")
        if v.username is not None:
            secret_refs(v.username)  # raises on a malformed reference
        if v.password is not None and not re.fullmatch(SECRET_REF.pattern, v.password.strip()):
            raise ValueError("the proxy password must be a vault reference: {{ secrets.NAME }}")
        return v

    def secret_names(self) -> set[str]:
        """Vault secrets the policy's proxy names (released to the worker of a task that uses it)."""
        names: set[str] = set()
        if self.proxy is not None:
            for value in (self.proxy.username, self.proxy.password):
                if value:
                    names |= secret_refs(value)
        return names


class UpdateOrgPolicyRequest(OrgScoped):
    policy: OrgPolicy


class WorkerOrgPolicyRequest(Contract):
    """A worker (or the vault on its behalf) asks for the policy of the org whose task it runs."""

    org_id: str = Field(min_length=1, max_length=64)
    worker_key: str = Field(min_length=1, max_length=200)
