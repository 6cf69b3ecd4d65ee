"""Envelope and error shapes shared by every request/reply subject and the HTTP API."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

Role = Literal["admin", "user", "viewer"]


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


class RpcReply(BaseModel, Generic[T]):
    """What every `svc.*` handler answers: either `data` or `error`, never both."""

    ok: bool
    data: T | None = None
    error: ErrorBody | None = None


class Actor(Contract):
    """Who is asking, as the gateway established it. Every org-scoped command carries one."""

    org_id: str
    user_id: str | None = None
    api_key_id: str | None = None
    role: Role = "viewer"
    client_ip: str | None = None
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


class Ack(BaseModel):
    ok: bool = True
