"""Identity: login, tokens, the current principal, JWKS, first-start bootstrap."""

from __future__ import annotations

from typing import Any, Literal

import email_validator
from pydantic import BaseModel, EmailStr, Field

from .common import Contract, Role

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
