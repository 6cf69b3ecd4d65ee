"""Tables of the `workers` schema. Invite codes and worker keys are stored as SHA-256 only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from browserfleet_contracts import subjects
from browserfleet_core.db import new_id, schema_metadata, utcnow
from sqlalchemy import JSON, Boolean, Column, DateTime, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "workers"


class WorkersBase(SQLModel):
    metadata = schema_metadata(SCHEMA)


def _tags() -> Column[Any]:
    return Column(JSON().with_variant(JSONB(), "postgresql"), nullable=False, server_default="[]")


class WorkerInvite(WorkersBase, table=True):
    __tablename__ = "worker_invites"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    code_hash: str = Field(max_length=64, unique=True)
    # None: a platform-wide invite (the embedded launcher's own workers)
    org_id: str | None = Field(default=None, max_length=64, index=True)
    tags: list[str] = Field(default_factory=list, sa_column=_tags())
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Worker(WorkersBase, table=True):
    __tablename__ = "workers"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str | None = Field(default=None, max_length=64, index=True)
    name: str = Field(max_length=200)
    tags: list[str] = Field(default_factory=list, sa_column=_tags())
    key_hash: str = Field(max_length=64, unique=True)
    pool: str = Field(default=subjects.DEFAULT_POOL, max_length=64)
    version: str | None = Field(default=None, max_length=64)
    last_seen: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    busy: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default="false"))
    running_tasks: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    slots: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
