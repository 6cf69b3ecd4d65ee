"""Browser profiles: a named Playwright storage state (cookies, localStorage) per organization.

The vault stores it encrypted and hands it only to the worker that has claimed the running task naming
the profile. A lease serialises tasks on one profile: `svc.vault.profile_acquire` grants it (with the
state) or says who holds it; `svc.vault.profile_save` writes the state back and ends the lease (without
a state it ends the lease and keeps the stored state). A state is session cookies, as good as a password:
it travels only sealed (`sealed.py`), to the worker's registered key and back to a key of the lease's own.

Users see their organization's profiles (`svc.vault.list_profiles`: name, version, size, never the state) and
admins delete one (`svc.vault.delete_profile`; refused while a task holds its lease).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from .common import Contract, Name, OrgScoped
from .sealed import SealedBox
from .workers import PublicKey, _x25519_public_key

MAX_PROFILE_STATE_BYTES = 512 * 1024  # JSON of one storage state; well under NATS' 1 MB payload


class ProfileAcquireRequest(Contract):
    task_id: str = Field(min_length=1, max_length=64)
    worker_key: str = Field(min_length=1, max_length=200)
    profile: Name
    attempt: int | None = Field(
        default=None, ge=1, description="the attempt the worker runs; refused if it is not the running one"
    )
    public_key: PublicKey | None = Field(
        default=None, description="the X25519 public key this worker process opens with (as for a release)"
    )

    _key = field_validator("public_key")(_x25519_public_key)


class ProfileLease(BaseModel):
    """`granted` with a token and, sealed to the worker (`LeasedProfile` inside, purpose `profile_lease`),
    the stored state; or who holds it and until when."""

    granted: bool
    profile: str
    lease_token: str | None = None
    sealed: SealedBox | None = Field(default=None, description="a granted lease's LeasedProfile, sealed")
    version: int = 0
    expires_at: datetime | None = None
    held_by_task: str | None = None


class LeasedProfile(Contract):
    """What a granted lease's sealed box holds: the stored state (None for a new profile) and the public
    key, of this lease only, that the state is sealed to on its way back (`ProfileSaveRequest`)."""

    state: dict[str, Any] | None = None
    save_key: PublicKey

    _key = field_validator("save_key")(_x25519_public_key)


class ProfileSaveRequest(Contract):
    task_id: str = Field(min_length=1, max_length=64)
    worker_key: str = Field(min_length=1, max_length=200)
    profile: Name
    lease_token: str = Field(min_length=1, max_length=64)
    attempt: int | None = Field(default=None, ge=1, description="the attempt the worker runs")
    sealed_state: SealedBox | None = Field(
        default=None,
        description="the storage state to store (JSON), sealed to the lease's `save_key` (purpose "
        "`profile_save`); omit to end the lease without saving",
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
