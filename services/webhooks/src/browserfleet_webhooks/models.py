"""Tables of the `webhooks` schema: endpoints, their sealed signing keys, one delivery per (endpoint, event),
the attempt log, replay jobs and the outbox."""

from __future__ import annotations

from datetime import datetime

from browserfleet_core.db import new_id, schema_metadata, utcnow
from browserfleet_core.outbox import outbox_table
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "webhooks"

# Delivery states. `failed` means "the last attempt failed and another one is scheduled".
PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"
DEAD = "dead"
DUE_STATES = (PENDING, FAILED)
REPLAYABLE_STATES = (FAILED, DEAD)

# Endpoint kinds: one an admin registered, or the implicit one per (org, URL) of tasks' `webhook_url`
ENDPOINT = "endpoint"
TASK_URL = "task_url"

JOB_RUNNING = "running"
JOB_COMPLETED = "completed"


class WebhooksBase(SQLModel):
    metadata = schema_metadata(SCHEMA)


def _ts(nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


def _unique_where(name: str, *columns: str, where: str) -> Index:
    """A partial unique index: `columns` unique among the rows `where` holds for."""
    return Index(name, *columns, unique=True, postgresql_where=text(where))


class WebhookEndpoint(WebhooksBase, table=True):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        # one implicit endpoint per task URL of an organization, whatever the number of tasks naming it
        _unique_where("uq_webhook_endpoints_task_url", "org_id", "url", where="kind = 'task_url'"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(max_length=64, index=True)
    kind: str = Field(default=ENDPOINT, max_length=16)
    url: str = Field(sa_column=Column(Text, nullable=False))
    # filters such as "task.completed", "task.*", "*"; JSONB so matching runs in SQL with `?|`
    events: list[str] = Field(sa_column=Column(JSONB, nullable=False))
    description: str | None = Field(default=None, max_length=500)
    # Only rows written before secrets were sealed hold one here; the service seals it at start and clears it.
    secret: str | None = Field(default=None, max_length=128)
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=32)
    disabled_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # health: the first failure since the last success, and the circuit breaker
    failing_since: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    consecutive_failures: int = 0
    circuit_open_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class WebhookSigningKey(WebhooksBase, table=True):
    """A signing secret, sealed (crypto.SecretBox). An endpoint's when `endpoint_id` is set, else the
    organization's (tasks' `webhook_url`). The current one has no `expires_at`; a rotated one keeps signing
    until its `expires_at` (the overlap window)."""

    __tablename__ = "webhook_signing_keys"
    __table_args__ = (
        _unique_where(
            "uq_webhook_signing_keys_endpoint_current",
            "endpoint_id",
            where="expires_at IS NULL AND endpoint_id IS NOT NULL",
        ),
        _unique_where(
            "uq_webhook_signing_keys_org_current",
            "org_id",
            where="expires_at IS NULL AND endpoint_id IS NULL",
        ),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(max_length=64, index=True)
    endpoint_id: str | None = Field(
        default=None,
        sa_column=Column(
            String(36), ForeignKey(f"{SCHEMA}.webhook_endpoints.id", ondelete="CASCADE"), nullable=True
        ),
    )
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    key_version: int
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    expires_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class WebhookDelivery(WebhooksBase, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # a redelivered or re-published event never creates a second delivery
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
        # the dispatcher's scan: due deliveries in time order
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_org_created", "org_id", "created_at"),
        # an endpoint's log and its failed deliveries since T (bulk replay)
        Index("ix_webhook_deliveries_endpoint_status", "endpoint_id", "status", "created_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    endpoint_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey(f"{SCHEMA}.webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        )
    )
    org_id: str = Field(max_length=64)
    event_id: str = Field(max_length=256)
    event_type: str = Field(max_length=128)
    # the exact bytes that are signed and sent, identical on every retry
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(default=PENDING, max_length=16)
    # every HTTP attempt ever made (the log's numbering); `cycle_attempt` counts those of the current
    # schedule, which a replay starts again
    attempt: int = 0
    cycle_attempt: int = 0
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    next_attempt_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class WebhookAttempt(WebhooksBase, table=True):
    """The delivery log: one row per HTTP attempt, kept when the delivery row moves on."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        UniqueConstraint("delivery_id", "attempt", name="uq_webhook_attempts_delivery_attempt"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    delivery_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey(f"{SCHEMA}.webhook_deliveries.id", ondelete="CASCADE"), nullable=False
        )
    )
    attempt: int
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    response: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class WebhookReplayJob(WebhooksBase, table=True):
    """Replay of every failed delivery of one endpoint created in [since, created_at], in steps: `cursor` is
    the last delivery id requeued, so a replica that dies mid-job leaves it for another to continue."""

    __tablename__ = "webhook_replay_jobs"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(max_length=64, index=True)
    endpoint_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey(f"{SCHEMA}.webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        )
    )
    since: datetime = Field(sa_column=_ts())
    status: str = Field(default=JOB_RUNNING, max_length=16)
    total: int = 0
    replayed: int = 0
    cursor: str | None = Field(default=None, max_length=36)
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    finished_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


outbox = outbox_table(WebhooksBase.metadata)
