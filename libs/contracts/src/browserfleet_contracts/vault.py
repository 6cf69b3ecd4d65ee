"""Vault: write-only credentials and their release to a claimed, running task."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from .common import Contract, OrgScoped
from .tasks import SECRET_NAME_PATTERN

CredentialType = Literal["password", "api_key", "token", "totp", "other"]


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


class ReleaseReply(BaseModel):
    values: dict[str, str]
