"""Vault: write-only credentials and their release to a claimed, running task."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .common import ById, Contract, OrgScoped
from .sealed import SealedBox
from .secret_refs import SECRET_NAME_PATTERN
from .workers import PublicKey, _x25519_public_key

# `sso_secret`: an identity provider's client secret (an org's SSO settings name it). Only admins write one,
# only auth reads it (`svc.vault.sso_client_secret`), and it is never released to a worker.
CredentialType = Literal["password", "api_key", "token", "totp", "other", "sso_secret"]
SSO_SECRET_TYPE = "sso_secret"


class CredentialCreate(Contract):
    """Body of `POST /api/v1/credentials`. `value` goes in and never comes back out."""

    name: str = Field(pattern=SECRET_NAME_PATTERN)
    value: str = Field(min_length=1, max_length=65_536)
    type: CredentialType = "password"
    description: str | None = Field(default=None, max_length=1000)


class CredentialPublic(BaseModel):
    id: str
    name: str
    type: CredentialType
    description: str | None
    key_version: int
    created_at: datetime
    updated_at: datetime


class CredentialUpdate(Contract):
    """Body of `PUT /admin/credentials/{id}`: a new value, type or description (at least one). The name is
    what tasks reference, so it stays: a `name` other than the credential's own is a 422."""

    name: str | None = Field(
        default=None, pattern=SECRET_NAME_PATTERN, description="if given, the current name"
    )
    value: str | None = Field(default=None, min_length=1, max_length=65_536)
    type: CredentialType | None = None
    description: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _something(self) -> CredentialUpdate:
        if not self.model_fields_set - {"name"}:
            raise ValueError("give at least one of value, type, description")
        return self


class UpdateCredentialRequest(ById):
    credential: CredentialUpdate


class PutCredentialRequest(OrgScoped):
    credential: CredentialCreate


class NameRequest(OrgScoped):
    name: str = Field(pattern=SECRET_NAME_PATTERN)


class CheckNamesRequest(OrgScoped):
    names: list[str] = Field(max_length=200)


class CheckNamesReply(BaseModel):
    missing: list[str]


class ReleaseRequest(Contract):
    task_id: str
    worker_key: str = Field(min_length=1, max_length=200)
    names: list[str] = Field(min_length=1, max_length=200)
    attempt: int | None = Field(
        default=None, ge=1, description="the attempt the worker runs; refused if it is not the running one"
    )
    public_key: PublicKey | None = Field(
        default=None,
        description="the X25519 public key this worker process opens with; the vault seals to the key "
        "worker-gateway has registered, and asks it again (past its cache) when the two differ",
    )

    _key = field_validator("public_key")(_x25519_public_key)


class ReleaseReply(BaseModel):
    """The values, sealed to the worker (`ReleasedSecrets` inside, purpose `release`, bound to
    `<task_id>:<attempt>:<worker_id>`): nothing on the way can read them."""

    sealed: SealedBox


class ReleasedSecrets(Contract):
    """What a release's sealed box holds: the values by name."""

    values: dict[str, str]


class SsoClientSecretRequest(Contract):
    """Auth asks for the client secret an organization's SSO settings name, to redeem a sign-in's code."""

    org_id: str = Field(min_length=1, max_length=64)
    name: str = Field(pattern=SECRET_NAME_PATTERN)


class SsoClientSecretReply(BaseModel):
    value: str
