"""Identity: login, tokens, the current principal, JWKS, first-start bootstrap."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import email_validator
from pydantic import AfterValidator, BaseModel, Field, field_validator

from .common import ById, Contract, OrgScoped, Role
from .secret_refs import SECRET_REF, secret_refs
from .tasks import DOMAIN_PATTERN, ProxySpec

# Self-hosted installs name their machines `*.local`, and the bootstrap admin is admin@browserfleet.local:
# email-validator rejects that special-use domain by default (its documented knob is this list), which
# would make the first admin unable to log in.
if "local" in email_validator.SPECIAL_USE_DOMAIN_NAMES:
    email_validator.SPECIAL_USE_DOMAIN_NAMES.remove("local")

MAX_EMAIL_LENGTH = 320


def normalize_email(raw: str) -> str:
    """THE email rule, the same at every door (user creation, invitation, bootstrap, an org's first admin,
    login, SSO): one spelling per mailbox (NFKC, trimmed, case-folded), then email-validator's syntax check
    with no DNS lookup (`check_deliverability` off) and the special-use names `.test` and `.local`
    allowed (test fixtures and self-hosted installs use them); `localhost`, `.invalid`, `.onion`, a domain
    without a dot, quoted local parts and IP literals are refused. Raises ValueError saying what is wrong."""
    if "\x00" in raw:
        raise ValueError("must not contain NUL")
    folded = unicodedata.normalize("NFKC", raw).strip().casefold()
    if len(folded) > MAX_EMAIL_LENGTH:
        raise ValueError(f"at most {MAX_EMAIL_LENGTH} characters")
    try:
        checked = email_validator.validate_email(folded, check_deliverability=False, test_environment=True)
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return str(checked.normalized)


EmailAddress = Annotated[str, AfterValidator(normalize_email)]


class LoginRequest(Contract):
    email: EmailAddress = Field(max_length=MAX_EMAIL_LENGTH)
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
    admin_email: EmailAddress = "admin@browserfleet.local"


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
# How the sign-in behind a token was made (RFC 8176 values: `pwd`, `otp`, `fed` for SSO, `mfa` when a second
# factor was checked), and when its second factor was last checked (epoch seconds; absent without one).
AMR_CLAIM = "amr"
MFA_AT_CLAIM = "mfa_at"
# when the token was issued, to the millisecond (`iat` has whole seconds): compared with a user's valid-after,
# so a sign-in in the same second as a deactivation is told apart from one before it
ISSUED_CLAIM = "issued"


# --- live user state: what the gateway checks on every request ----------------------------------------
class UserStateRequest(Contract):
    user_id: str = Field(min_length=1, max_length=64)
    org_id: str = Field(min_length=1, max_length=64)


class UserState(BaseModel):
    """What a token cannot say about its user once it is signed: whether they are still active, their role
    now, the time before which their tokens no longer count, and whether MFA applies to them. The gateway
    caches it per user, and `auth.user.changed` replaces it on every replica after a change commits."""

    user_id: str
    org_id: str
    active: bool
    role: Role = "viewer"
    valid_after: float = Field(
        default=0, description="tokens issued before this instant (epoch seconds) are refused"
    )
    mfa: bool = Field(default=False, description="a second factor applies (enrolled, or the org requires it)")


class UserChanged(BaseModel):
    """Broadcast on `subjects.USER_CHANGED` (core NATS) after a change commits: one user's new state, or,
    with `state` unset, every user of `org_id` (an org-wide setting such as the MFA requirement changed)."""

    org_id: str
    state: UserState | None = None


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
    """Broadcast on `subjects.API_KEY_REVOKED` (core NATS) so every gateway drops its cache entry."""

    key_id: str
    org_id: str


# --- organizations (platform operator) ---------------------------------------------------------------
class OrganizationCreate(Contract):
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(default=None, min_length=1, max_length=63)
    plan: Plan = "free"
    settings: dict[str, Any] = Field(default_factory=dict)
    admin_email: EmailAddress | None = Field(
        default=None,
        max_length=MAX_EMAIL_LENGTH,
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


class UpdateOrganizationRequest(ById):
    organization: OrganizationUpdate


# --- users (org admins) ------------------------------------------------------------------------------
class UserCreate(Contract):
    email: EmailAddress = Field(max_length=MAX_EMAIL_LENGTH)
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


class UpdateUserRequest(ById):
    user: UserUpdate


# --- audit log ---------------------------------------------------------------------------------------
AuditOutcome = Literal["pending", "success", "refused", "failed"]


class AuditEntry(BaseModel):
    id: int
    at: datetime
    action: str = Field(description="what was done: `user.created`, ... or `api.<operation>` for a call")
    outcome: str = Field(
        description="success; refused (401/403/429: not allowed); failed (any other error); pending (the "
        "change began and its answer was never recorded: the gateway stopped mid-call)"
    )
    org_id: str | None
    actor_user_id: str | None
    actor_api_key_id: str | None
    client_ip: str | None
    target: str | None
    detail: dict[str, Any]
    request_id: str | None = Field(default=None, description="the call's X-Request-ID")
    route: str | None = Field(default=None, description="`METHOD /path/{template}` of the call")
    status: int | None = Field(default=None, description="the HTTP status the call was answered with")


class ListAuditRequest(OrgScoped):
    action: str | None = Field(default=None, max_length=64)
    outcome: AuditOutcome | None = None
    actor_id: str | None = Field(default=None, max_length=64, description="a user's or an API key's id")
    target: str | None = Field(default=None, max_length=320)
    request_id: str | None = Field(default=None, max_length=64)
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=40, description="next_cursor of the previous page")


class RequestAudit(OrgScoped):
    """The gateway's record of one state-changing call, in two steps. `begin` is written (and committed)
    before the call reaches the service that changes anything, so no change exists without its entry;
    `end` sets the answer's status and outcome (or writes the whole entry for a call refused before it
    began). `actor.request_id` names the entry; auth's own detail of the change lands in it too."""

    phase: Literal["begin", "end"]
    action: str = Field(max_length=64, description="`api.<operation>`")
    route: str = Field(max_length=200)
    target: str | None = Field(default=None, max_length=320)
    path: dict[str, str] = Field(default_factory=dict, max_length=8, description="the path's parameters")
    status: int | None = Field(default=None, ge=100, le=599)
    code: str | None = Field(default=None, max_length=64, description="the error code of a refusal/failure")


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
