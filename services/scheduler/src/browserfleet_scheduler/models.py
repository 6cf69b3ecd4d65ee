"""The scheduler's tables (schema `scheduler`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from browserfleet_core.db import schema_metadata, utcnow
from browserfleet_core.outbox import outbox_table
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# the statuses a task has until it ends (state.py), in SQL
UNFINISHED_SQL = "'pending', 'queued', 'assigned', 'running'"


class SchedulerBase(SQLModel):
    metadata = schema_metadata("scheduler")


def _ts(*, nullable: bool, index: bool = False) -> Any:
    return Field(
        default=None if nullable else ...,
        sa_type=DateTime(timezone=True),
        nullable=nullable,
        index=index,
    )


class Task(SchedulerBase, table=True):
    __tablename__ = "tasks"
    # Every status change writes a new version to each index (no update is HOT: `status` is indexed), so
    # each index here is one a read needs, partial where its reads look at part of the rows (migration 0006)
    __table_args__ = (
        # NULL keys never conflict: only rows with a key are indexed (an ON CONFLICT names the predicate)
        Index(
            "uq_tasks_org_id_idempotency_key",
            "org_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # keyset pagination of one org's tasks, newest first
        Index("ix_tasks_org_id_created_at_id", "org_id", "created_at", "id"),
        # admission's "which org was served longest ago": one index probe per org, whatever its history
        Index(
            "ix_tasks_org_id_dispatched_at",
            "org_id",
            "dispatched_at",
            postgresql_where=text("dispatched_at IS NOT NULL"),
        ),
        # the admission scan (queued tasks, oldest first) and each org's slots held: partial, so both stay
        # the size of the queue and of what runs, not of the history
        Index("ix_tasks_queued", "created_at", "id", postgresql_where=text("status = 'queued'")),
        Index("ix_tasks_active_org", "org_id", postgresql_where=text("status IN ('assigned', 'running')")),
        # the timeout reaper's scans: what is not finished
        Index("ix_tasks_unfinished", "status", postgresql_where=text(f"status IN ({UNFINISHED_SQL})")),
        # exactly one task per schedule tick, whichever replica fires it
        Index(
            "uq_tasks_schedule_id_schedule_tick",
            "schedule_id",
            "schedule_tick",
            unique=True,
            postgresql_where=text("schedule_id IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=36)
    org_id: str = Field(max_length=64)
    title: str | None = Field(default=None, max_length=500)
    kind: str = Field(max_length=16)
    status: str = Field(max_length=16)
    status_detail: str | None = Field(default=None, sa_type=Text)
    priority: str = Field(max_length=16)
    worker_tags: list[str] = Field(default_factory=list, sa_type=JSONB)
    spec: dict[str, Any] = Field(sa_type=JSONB)
    secret_names: list[str] = Field(default_factory=list, sa_type=JSONB)
    timeout_seconds: int
    max_attempts: int
    attempt: int = 1
    worker_id: str | None = Field(default=None, max_length=64)
    result: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    error_message: str | None = Field(default=None, sa_type=Text)
    error_step: int | None = None
    artifacts: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONB)
    webhook_url: str | None = Field(default=None, sa_type=Text)
    # `metadata` is SQLModel's own attribute, so the column is mapped under another name
    task_metadata: dict[str, str] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False)
    )
    created_by: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=255)
    # SHA-256 (hex) of the canonical body the key was first used with (`TaskCreate.fingerprint()`)
    idempotency_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    started_at: datetime | None = _ts(nullable=True)
    completed_at: datetime | None = _ts(nullable=True)
    execution_time_seconds: float | None = None
    # admission: not eligible before `not_before` (retry backoff); `pool` it was dispatched to
    not_before: datetime | None = _ts(nullable=True)
    dispatched_at: datetime | None = _ts(nullable=True)
    pool: str | None = Field(default=None, max_length=64)
    plan: str | None = Field(default=None, max_length=64)
    schedule_id: str | None = Field(default=None, max_length=36)
    schedule_tick: datetime | None = _ts(nullable=True)


class TaskAttempt(SchedulerBase, table=True):
    __tablename__ = "task_attempts"
    __table_args__ = (UniqueConstraint("task_id", "attempt", name="uq_task_attempts_task_id_attempt"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    task_id: str = Field(
        sa_column=Column(String(36), ForeignKey("scheduler.tasks.id", ondelete="CASCADE"), nullable=False)
    )
    attempt: int
    worker_id: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=16)
    claimed_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)
    error: str | None = Field(default=None, sa_type=Text)
    # JetStream delivery count of the TASKS message the claim came with (None: not told)
    delivery: int | None = None


class TaskLog(SchedulerBase, table=True):
    __tablename__ = "task_logs"
    __table_args__ = (
        # a re-sent line (redelivered update, or the copy inside the result) is stored once
        UniqueConstraint("task_id", "attempt", "seq", name="uq_task_logs_task_id_attempt_seq"),
        Index("ix_task_logs_task_id_id", "task_id", "id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    task_id: str = Field(
        sa_column=Column(String(36), ForeignKey("scheduler.tasks.id", ondelete="CASCADE"), nullable=False)
    )
    attempt: int
    seq: int
    level: str = Field(max_length=16)
    message: str = Field(sa_type=Text)
    log_metadata: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False)
    )
    at: datetime = Field(sa_type=DateTime(timezone=True))


class Schedule(SchedulerBase, table=True):
    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_due", "paused", "next_run_at"),)

    id: str = Field(primary_key=True, max_length=36)
    org_id: str = Field(index=True, max_length=64)
    name: str = Field(max_length=200)
    cron: str = Field(max_length=200)
    timezone: str = Field(max_length=64)
    template: dict[str, Any] = Field(sa_type=JSONB)
    paused: bool = False
    next_run_at: datetime | None = _ts(nullable=True)
    last_run_at: datetime | None = _ts(nullable=True)
    created_by: str | None = Field(default=None, max_length=64)
    plan: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


outbox = outbox_table(SchedulerBase.metadata)

# the transaction id of the last admission made under the admission lock (repository.admission says why)
admission_xid = Sequence("admission_xid", start=0, minvalue=0, metadata=SchedulerBase.metadata)
