"""Envelope and error shapes shared by every request/reply subject and the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

Role = Literal["admin", "user", "viewer"]
# an artifact, extracted value or browser profile: safe as a file and object-store name
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class Contract(BaseModel):
    """Base of every contract model: unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Machine-readable error; `status` is the HTTP status the gateway answers with."""

    status: int = 500
    code: str = "internal_error"
    message: str = "internal error"
    field: str | None = None
    detail: list[dict[str, Any]] | None = None


class Actor(Contract):
    """Who is asking, as the gateway established it. Every org-scoped command carries one."""

    org_id: str
    user_id: str | None = None
    api_key_id: str | None = None
    role: Role = "viewer"
    client_ip: str | None = None
    request_id: str | None = Field(
        default=None,
        max_length=64,
        description="the gateway's X-Request-ID of the call that acts: auth writes its audit detail into that "
        "call's entry",
    )
    plan: str | None = Field(
        default=None, max_length=64, description="the org's plan, for per-plan limits (scheduler concurrency)"
    )


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class OrgScoped(Contract):
    actor: Actor


class ById(OrgScoped):
    id: str = Field(min_length=1, max_length=64)


class Empty(Contract):
    """A request that carries nothing (and accepts no fields)."""


class Ack(BaseModel):
    ok: bool = True


class DbHealth(BaseModel):
    """A service's answer to "is your database reachable": `SELECT 1` through its own pool."""

    ok: bool
    detail: str
