"""Browser profiles: a named Playwright storage state (cookies, localStorage) per organization.

The vault stores it encrypted and hands it only to the worker that has claimed the running task naming
the profile. A lease serialises tasks on one profile: `svc.vault.profile_acquire` grants it (with the
state) or says who holds it; `svc.vault.profile_save` writes the state back and ends the lease (without
a state it ends the lease and keeps the stored state).

Users see their organization's profiles (`svc.vault.list_profiles`: name, version, size, never the state) and
admins delete one (`svc.vault.delete_profile`; refused while a task holds its lease).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from .common import Contract, OrgScoped
from .tasks import Name

MAX_PROFILE_STATE_BYTES = 512 * 1024  # JSON of one storage state; well under NATS' 1 MB payload


class ProfileAcquireRequest(Contract):
    task_id: str = Field(min_length=1, max_length=64)
    worker_key: str = Field(min_length=1, max_length=200)
    profile: Name


class ProfileLease(BaseModel):
    """`granted` with a token and the stored state (None for a new profile), or who holds it and until when."""

    granted: bool
    profile: str
    lease_token: str | None = None
    state: dict[str, Any] | None = None
    version: int = 0
    expires_at: datetime | None = None
    held_by_task: str | None = None


class ProfileSaveRequest(Contract):
    task_id: str = Field(min_length=1, max_length=64)
    worker_key: str = Field(min_length=1, max_length=200)
    profile: Name
    lease_token: str = Field(min_length=1, max_length=64)
    state: dict[str, Any] | None = Field(
        default=None, description="the storage state to store; omit to end the lease without saving"
    )


class ProfileSaveReply(BaseModel):
    saved: bool
    version: int


class ProfilePublic(BaseModel):
    """A profile as `GET /api/v1/profiles` shows it: never its state."""

    name: str
    version: int = Field(description="saves so far (0: leased once, nothing saved yet)")
    size: int = Field(description="bytes of the stored storage state (JSON), 0 when none is stored")
    in_use: bool = Field(description="a running task holds its lease now")
    created_at: datetime
    updated_at: datetime


class ListProfilesRequest(OrgScoped):
    pass


class ProfileNameRequest(OrgScoped):
    name: Name
