"""Workers: invites (one-time and pool), registration, heartbeats, presence and lifecycle, worker.* events."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .common import Actor, Contract, OrgScoped
from .events import EventType
from .tasks import WORKER_TAG_PATTERN

WorkerTag = Annotated[str, Field(pattern=WORKER_TAG_PATTERN)]
# A pool's name as an admin writes it. No `_`: an org-bound pool's subject token is `<name>_<org_id>`
# (subjects.pool_key), so no platform pool name can ever equal an organization's pool token.
POOL_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
PoolName = Annotated[str, Field(pattern=POOL_NAME_PATTERN)]
WorkerStatus = Literal["online", "offline", "busy", "draining", "error"]
WorkerState = WorkerStatus  # the older name of the same thing
# what a worker may say about itself (`PUT /workers/{id}/status`): offline = stopping cleanly
ReportedStatus = Literal["online", "busy", "draining", "error", "offline"]
WORKER_KEY_PREFIX = "sk_worker_"
X25519_KEY_BYTES = 32
MAX_INVITE_SECONDS = 365 * 86_400


def _x25519_public_key(value: str | None) -> str | None:
    """A raw X25519 public key, base64url (43 characters, padding optional): what the vault seals to."""
    if value is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("must be base64url of a 32-byte X25519 public key") from None
    if len(raw) != X25519_KEY_BYTES:
        raise ValueError("must be base64url of a 32-byte X25519 public key")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


PublicKey = Annotated[str, Field(min_length=43, max_length=44, description="base64url X25519 public key")]


class DeviceInfo(Contract):
    """The seed's `device_info`: what the machine says about itself (shown to admins, never trusted)."""

    hostname: str | None = Field(default=None, max_length=255)
    platform: str | None = Field(default=None, max_length=64, description="e.g. linux, darwin, win32")
    version: str | None = Field(default=None, max_length=64, description="the worker's version")


# --- invites ----------------------------------------------------------------------------------------
class InviteCreate(Contract):
    """A one-time invite (the seed's `{name, capabilities}`), or a pool invite (`multi_use`) that every
    replica of a Deployment registers with, each getting its own worker id and key."""

    name: str | None = Field(default=None, min_length=1, max_length=200, description="the worker's name")
    capabilities: list[WorkerTag] = Field(
        default_factory=list, max_length=20, description="the seed's word for tags (merged into `tags`)"
    )
    tags: list[WorkerTag] = Field(default_factory=list, max_length=20)
    pool: PoolName = Field(default="default", description="the pool its workers join")
    multi_use: bool = Field(default=False, description="any number of registrations until it expires")
    max_uses: int | None = Field(default=None, ge=1, le=100_000, description="a multi-use invite's cap")
    ttl_seconds: int = Field(default=3600, ge=60, le=MAX_INVITE_SECONDS)
    expires_at: datetime | None = Field(default=None, description="instead of ttl_seconds")

    @model_validator(mode="after")
    def _one_expiry(self) -> InviteCreate:
        if self.expires_at is not None and "ttl_seconds" in self.model_fields_set:
            raise ValueError("give expires_at or ttl_seconds, not both")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone")
        if self.max_uses is not None and not self.multi_use:
            raise ValueError("max_uses is for multi_use invites")
        return self

    def all_tags(self) -> list[str]:
        return sorted({*self.tags, *self.capabilities})


class CreateInviteRequest(Contract):
    """`actor` is None only for the platform operator path (the embedded launcher, the worker-gateway CLI):
    such an invite's workers serve every organization."""

    actor: Actor | None = None
    invite: InviteCreate = Field(default_factory=InviteCreate)


class InviteInfo(BaseModel):
    """An invite as listed: everything but the code, which is shown once, at creation."""

    id: str
    org_id: str | None = Field(description="None: a platform invite (its workers serve every org)")
    name: str | None
    pool: str
    tags: list[str]
    multi_use: bool
    max_uses: int | None
    uses: int
    expires_at: datetime
    revoked_at: datetime | None
    created_at: datetime
    status: Literal["active", "used", "expired", "revoked"]


class InvitePublic(InviteInfo):
    code: str
    invite_code: str = Field(description="the seed's name for `code` (the same value)")


class ListInvitesRequest(OrgScoped):
    pass


# --- registration -----------------------------------------------------------------------------------
class RegisterRequest(Contract):
    invite_code: str = Field(min_length=1, max_length=200)
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="default: a one-time invite's name, else device_info.hostname",
    )
    tags: list[WorkerTag] = Field(default_factory=list, max_length=20)
    version: str | None = Field(default=None, max_length=64)
    device_info: DeviceInfo | None = None
    public_key: PublicKey | None = Field(
        default=None,
        description="the worker's X25519 public key (base64url); the vault seals secret releases to it",
    )

    _key = field_validator("public_key")(_x25519_public_key)


class RegisterReply(BaseModel):
    worker_id: str
    worker_key: str
    api_key: str = Field(description="the seed's name for `worker_key` (the same value)")
    pool: str = Field(description="the pool's subject token the worker pulls from (subjects.pool_key)")
    pool_name: str
    org_id: str | None
    tags: list[str]


class RotateKeyRequest(Contract):
    """Re-registration of a known worker: a fresh X25519 public key replaces the old one (every start)."""

    worker_key: str = Field(min_length=1, max_length=200)
    worker_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="when given, must be the key's own worker"
    )
    public_key: PublicKey
    device_info: DeviceInfo | None = None

    _key = field_validator("public_key")(_x25519_public_key)


class PublicKeyBody(Contract):
    """`PUT /workers/{id}/key`: the worker's new X25519 public key."""

    public_key: PublicKey
    device_info: DeviceInfo | None = None

    _key = field_validator("public_key")(_x25519_public_key)


# --- presence ---------------------------------------------------------------------------------------
class Heartbeat(Contract):
    worker_key: str = Field(min_length=1, max_length=200)
    busy: bool = False
    running_tasks: int = Field(default=0, ge=0)
    slots: int = Field(default=1, ge=1)


class HeartbeatReply(BaseModel):
    ok: bool = True
    drain: bool = Field(default=False, description="an admin asked this worker to drain")


class WorkerStatusReport(Contract):
    """`PUT /workers/{id}/status`: the worker's own word on its state."""

    status: ReportedStatus
    detail: str | None = Field(default=None, max_length=500, description="e.g. why it is in error")
    running_tasks: int | None = Field(default=None, ge=0)


class WorkerStatusRequest(WorkerStatusReport):
    worker_key: str = Field(min_length=1, max_length=200)
    worker_id: str = Field(min_length=1, max_length=64, description="must be the key's own worker")


class DeregisterRequest(Contract):
    """A worker leaving for good (a pool replica's clean shutdown): its identity and key are removed."""

    worker_key: str = Field(min_length=1, max_length=200)
    worker_id: str = Field(min_length=1, max_length=64, description="must be the key's own worker")


class WorkerAuthRequest(Contract):
    worker_key: str = Field(min_length=1, max_length=200)


class WorkerIdentity(BaseModel):
    worker_id: str
    org_id: str | None
    name: str
    tags: list[str]
    pool: str = Field(default="default", description="the pool's subject token (subjects.pool_key)")
    public_key: str | None = Field(default=None, description="X25519 public key the vault seals to")


class WorkerPublic(BaseModel):
    id: str
    name: str
    org_id: str | None
    pool: str = Field(description="the pool's name")
    tags: list[str]
    status: WorkerStatus
    state: WorkerStatus = Field(description="the same as `status` (its older name)")
    status_detail: str | None = None
    last_seen: datetime | None
    running_tasks: int
    slots: int
    version: str | None
    device_info: DeviceInfo | None
    created_at: datetime


class ListWorkersRequest(OrgScoped):
    pass


class DrainReply(BaseModel):
    """Answer to `workers.drain.<worker_id>` once the worker has drained (it keeps running, idle)."""

    worker_id: str
    finished: int = Field(description="running tasks that finished within the grace period")
    handed_back: int = Field(description="running tasks given back for redelivery when the grace ran out")


# --- the pool registry (what the scheduler routes by) ---------------------------------------------------
class PoolsRequest(Contract):
    """Every registered pool, platform and organizations' alike (asked by the scheduler)."""


class PoolInfo(BaseModel):
    key: str = Field(description="subject token: tasks.run.<key>.<priority>, consumers pool-<key>-<priority>")
    name: str
    org_id: str | None = Field(description="None: a platform pool, serving every organization")
    tags: list[str] = Field(description="tags every registered worker of the pool has")
    workers: int
    online: int


# --- broadcasts and events -------------------------------------------------------------------------------
class WorkerRevoked(BaseModel):
    """`workers.revoked` (core NATS, after the commit): every cache of worker keys drops this worker now."""

    worker_id: str
    org_id: str | None = None


class WorkerEventData(BaseModel):
    """Payload of worker.online / worker.offline / worker.draining / worker.revoked. The seed's
    worker.offline carries worker_id, worker_name and last_seen; the rest is for the other three."""

    worker_id: str
    worker_name: str
    last_seen: datetime | None
    pool: str
    status: WorkerStatus | Literal["revoked"]
    reason: str | None = None


def worker_event_id(worker_id: str, event: EventType, seq: int | None = None) -> str:
    """Stable id (and `Nats-Msg-Id`) of a worker event: per presence change for those a worker repeats
    (online, offline, draining: `seq` counts the worker's changes), once for `worker.revoked`."""
    name = event.value.removeprefix("worker.")
    return f"{worker_id}:{name}" if seq is None else f"{worker_id}:{name}:{seq}"
