"""Single sign-on with OpenID Connect (authorization code flow with PKCE), per organization."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from .auth import EmailAddress
from .common import Contract, OrgScoped, Role
from .secret_refs import SECRET_NAME_PATTERN

EMAIL_DOMAIN_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
CLAIM_NAME_PATTERN = r"^[A-Za-z0-9_:.\-/]{1,100}$"


class SsoSettings(Contract):
    """An organization's identity provider. The client secret is a vault credential of type `sso_secret`
    (stored with `POST /api/v1/credentials`, admins only), named here and read by auth at each sign-in."""

    issuer: str = Field(
        min_length=8,
        max_length=500,
        description="the IdP's issuer URL; its /.well-known/openid-configuration must name the same issuer",
    )
    client_id: str = Field(min_length=1, max_length=255)
    client_secret_name: str = Field(pattern=SECRET_NAME_PATTERN, description="vault credential name")
    email_domains: list[str] = Field(
        min_length=1,
        max_length=50,
        description="the domains the organization owns: an ID token's email must be in one of them, and no "
        "other organization may claim the same domain",
    )
    default_role: Role = Field(default="user", description="role of a user created at first sign-in")
    role_claim: str | None = Field(
        default=None, pattern=CLAIM_NAME_PATTERN, description="ID token claim read for `role_mapping`"
    )
    role_mapping: dict[str, Role] = Field(
        default_factory=dict,
        max_length=100,
        description="claim value -> role (the highest matching role wins; applied at every sign-in)",
    )
    sso_only: bool = Field(
        default=False, description="refuse password sign-in to the org's users, except `break_glass_email`"
    )
    break_glass_email: EmailAddress | None = Field(
        default=None, description="an active admin of the org who may still sign in with a password"
    )
    enabled: bool = True


class SsoSettingsPublic(SsoSettings):
    org_id: str
    login_path: str = Field(description="where a browser starts the sign-in")
    updated_at: datetime


class PutSsoSettingsRequest(OrgScoped):
    settings: SsoSettings


class SsoStartRequest(Contract):
    org_slug: str = Field(min_length=1, max_length=63)
    redirect_uri: str = Field(min_length=1, max_length=2000, description="the gateway's callback URL")


class SsoStartReply(BaseModel):
    authorization_url: str


class SsoCallbackRequest(Contract):
    """What the IdP sent back to the callback, as the gateway received it."""

    state: str | None = Field(default=None, max_length=200)
    code: str | None = Field(default=None, max_length=4000)
    error: str | None = Field(default=None, max_length=200)
    error_description: str | None = Field(default=None, max_length=1000)
    client_ip: str | None = None


class SsoHandoff(BaseModel):
    """A one-time code, valid `expires_in` seconds, that `POST /auth/sso/exchange` turns into tokens: the
    browser carries it in the URL fragment (never sent to a server, never in a log), not the tokens."""

    code: str
    expires_in: int


class SsoExchangeRequest(Contract):
    code: str = Field(min_length=1, max_length=200)


class SsoExchangeCommand(SsoExchangeRequest):
    client_ip: str | None = None
