"""Tables of the `webhooks` schema: endpoints, one delivery per (endpoint, event), and the attempt log."""

from __future__ import annotations

from datetime import datetime

from browserfleet_core.db import new_id, schema_metadata, utcnow
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


class WebhooksBase(SQLModel):
    metadata = schema_metadata(SCHEMA)


def _ts(nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class WebhookEndpoint(WebhooksBase, table=True):
    __tablename__ = "webhook_endpoints"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    org_id: str = Field(max_length=64, index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    # filters such as "task.completed", "task.*", "*"; JSONB so matching runs in SQL with `?|`
    events: list[str] = Field(sa_column=Column(JSONB, nullable=False))
    description: str | None = Field(default=None, max_length=500)
    # Stored in clear because HMAC signing needs the key itself (a hash would not do).
    # TODO(security): encrypt at rest (vault-style envelope encryption) — tracked as a follow-up issue.
    secret: str = Field(max_length=128)
    enabled: bool = True
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class WebhookDelivery(WebhooksBase, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # a redelivered or re-published event never creates a second delivery
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
        # the dispatcher's scan: due deliveries in time order
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_org_created", "org_id", "created_at"),
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
    attempt: int = 0
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
    at: datetime = Field(default_factory=utcnow, sa_column=_ts())
