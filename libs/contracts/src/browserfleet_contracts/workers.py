"""Workers: invites, registration, heartbeats and presence."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from .common import Actor, Contract, OrgScoped
from .tasks import WORKER_TAG_PATTERN

WorkerTag = Annotated[str, Field(pattern=WORKER_TAG_PATTERN)]
WorkerState = Literal["online", "offline", "busy"]


class InviteCreate(Contract):
    tags: list[WorkerTag] = Field(default_factory=list, max_length=20)
    ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86_400)


class CreateInviteRequest(Contract):
    """`actor` is None only for the platform operator path (the embedded launcher)."""

    actor: Actor | None = None
    invite: InviteCreate = Field(default_factory=InviteCreate)


class InvitePublic(BaseModel):
    code: str
    expires_at: datetime
    tags: list[str]


class RegisterRequest(Contract):
    invite_code: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    tags: list[WorkerTag] = Field(default_factory=list, max_length=20)
    version: str | None = Field(default=None, max_length=64)


class RegisterReply(BaseModel):
    worker_id: str
    worker_key: str
    pool: str


class Heartbeat(Contract):
    worker_key: str = Field(min_length=1, max_length=200)
    busy: bool = False
    running_tasks: int = Field(default=0, ge=0)
    slots: int = Field(default=1, ge=1)


class WorkerAuthRequest(Contract):
    worker_key: str = Field(min_length=1, max_length=200)


class WorkerIdentity(BaseModel):
    worker_id: str
    org_id: str | None
    name: str
    tags: list[str]


class WorkerPublic(BaseModel):
    id: str
    name: str
    org_id: str | None
    tags: list[str]
    state: WorkerState
    last_seen: datetime | None
    running_tasks: int
    created_at: datetime


class ListWorkersRequest(OrgScoped):
    pass


class DrainReply(BaseModel):
    """Answer to `workers.drain.<worker_id>` once the worker has drained (it keeps running, idle)."""

    worker_id: str
    finished: int = Field(description="running tasks that finished within the grace period")
    handed_back: int = Field(description="running tasks given back for redelivery when the grace ran out")
