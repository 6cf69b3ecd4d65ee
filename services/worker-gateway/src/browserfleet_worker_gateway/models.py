"""Tables of the `workers` schema. Invite codes and worker keys are stored as SHA-256 only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_core.db import new_id, schema_metadata, utcnow
from browserfleet_core.outbox import outbox_table
from sqlalchemy import JSON, Boolean, Column, DateTime, Index, Integer, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "workers"


class WorkersBase(SQLModel):
    metadata = schema_metadata(SCHEMA)


def _json(default: str | None = "[]") -> Column[Any]:
    return Column(
        JSON().with_variant(JSONB(), "postgresql"), nullable=default is None, server_default=default
    )


def _ts(nullable: bool = True) -> Column[Any]:
    return Column(DateTime(timezone=True), nullable=nullable)


class WorkerInvite(WorkersBase, table=True):
    __tablename__ = "worker_invites"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    code_hash: str = Field(max_length=64, unique=True)
    # None: a platform-wide invite (the embedded launcher's, the operator's pools)
    org_id: str | None = Field(default=None, max_length=64, index=True)
    name: str | None = Field(default=None, max_length=200)
    pool: str = Field(default=subjects.DEFAULT_POOL, max_length=32)
    tags: list[str] = Field(default_factory=list, sa_column=_json())
    # a pool invite: every registration is a worker of its own, until it expires, is revoked or is used up
    multi_use: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default="false"))
    max_uses: int | None = Field(default=None)
    uses: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    # the operator's invite from PLATFORM_POOL_INVITE: replaced (the old one revoked) when the setting changes
    configured: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default="false"))
    expires_at: datetime = Field(sa_column=_ts(nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts())
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class Worker(WorkersBase, table=True):
    __tablename__ = "workers"
    # the offline sweep: live workers whose presence says online
    __table_args__ = (
        Index(
            "ix_workers_online",
            "last_seen",
            postgresql_where=text("presence = 'online' AND revoked_at IS NULL"),
        ),
        # a repeated registration's lookup: the workers not seen yet (the nonce goes at the first beat)
        Index("ix_workers_unseen", "invite_id", postgresql_where=text("key_nonce IS NOT NULL")),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str | None = Field(default=None, max_length=64, index=True)
    name: str = Field(max_length=200)
    tags: list[str] = Field(default_factory=list, sa_column=_json())
    key_hash: str = Field(max_length=64, unique=True)
    # the pool's subject token (subjects.pool_key: `<name>_<org_id>` for an org's pool) and its name
    pool: str = Field(default=subjects.DEFAULT_POOL, max_length=128)
    pool_name: str = Field(default=subjects.DEFAULT_POOL, max_length=32)
    invite_id: str | None = Field(default=None, max_length=36)
    version: str | None = Field(default=None, max_length=64)
    device_info: dict[str, Any] | None = Field(default=None, sa_column=_json(None))
    # X25519, base64url: the vault seals releases to it; replaced at every start (rotate_key)
    public_key: str | None = Field(default=None, max_length=64)
    # what the key of a registration with a public key is derived from, with the invite code, so the same
    # registration repeated (its reply was lost) gets the same key (registration.py); cleared at first beat
    key_nonce: str | None = Field(default=None, max_length=64)
    last_seen: datetime | None = Field(default=None, sa_column=_ts())
    busy: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default="false"))
    running_tasks: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    slots: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    # what the last worker.online / worker.offline event said, and how many presence events it has had
    # (the events' ids): a heartbeat after `offline` is a worker.online, a silence after `online` a worker.offline
    presence: str = Field(default="offline", max_length=16)
    presence_seq: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    # the worker's own word (PUT /workers/{id}/status): online, busy, draining or error, with its detail
    reported_status: str | None = Field(default=None, max_length=16)
    status_detail: str | None = Field(default=None, max_length=500)
    drain_requested_at: datetime | None = Field(default=None, sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts())
    # revoked (by an admin) or deregistered (the worker left)
    removed_reason: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


outbox = outbox_table(WorkersBase.metadata)
