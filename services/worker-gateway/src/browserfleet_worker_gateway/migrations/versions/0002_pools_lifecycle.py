"""pools and lifecycle: pool invites, device info and public keys, presence events, drain/revoke, outbox

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "workers"


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    false = sa.text("false")
    op.add_column("worker_invites", sa.Column("name", sa.String(200), nullable=True), schema=S)
    op.add_column(
        "worker_invites", sa.Column("pool", sa.String(32), nullable=False, server_default="default"), schema=S
    )
    op.add_column(
        "worker_invites", sa.Column("multi_use", sa.Boolean(), nullable=False, server_default=false), schema=S
    )
    op.add_column("worker_invites", sa.Column("max_uses", sa.Integer(), nullable=True), schema=S)
    op.add_column(
        "worker_invites", sa.Column("uses", sa.Integer(), nullable=False, server_default="0"), schema=S
    )
    op.add_column(
        "worker_invites", sa.Column("configured", sa.Boolean(), nullable=False, server_default=false), schema=S
    )
    op.add_column("worker_invites", sa.Column("revoked_at", ts, nullable=True), schema=S)
    # a used one-time invite of before this revision counts as used once
    op.execute("UPDATE workers.worker_invites SET uses = 1 WHERE used_at IS NOT NULL")

    op.alter_column("workers", "pool", type_=sa.String(128), existing_nullable=False, schema=S)
    op.add_column(
        "workers", sa.Column("pool_name", sa.String(32), nullable=False, server_default="default"), schema=S
    )
    op.execute("UPDATE workers.workers SET pool_name = pool")
    # an organization's worker registered before pools were namespaced pulled the platform's pool (and
    # refused other orgs' tasks there); it now pulls its organization's own (subjects.pool_key)
    op.execute("UPDATE workers.workers SET pool = pool_name || '_' || org_id WHERE org_id IS NOT NULL")
    op.add_column("workers", sa.Column("invite_id", sa.String(36), nullable=True), schema=S)
    op.add_column(
        "workers",
        sa.Column("device_info", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        schema=S,
    )
    op.add_column("workers", sa.Column("public_key", sa.String(64), nullable=True), schema=S)
    op.add_column(
        "workers", sa.Column("presence", sa.String(16), nullable=False, server_default="offline"), schema=S
    )
    op.add_column(
        "workers", sa.Column("presence_seq", sa.Integer(), nullable=False, server_default="0"), schema=S
    )
    op.add_column("workers", sa.Column("reported_status", sa.String(16), nullable=True), schema=S)
    op.add_column("workers", sa.Column("status_detail", sa.String(500), nullable=True), schema=S)
    op.add_column("workers", sa.Column("drain_requested_at", ts, nullable=True), schema=S)
    op.add_column("workers", sa.Column("removed_reason", sa.String(32), nullable=True), schema=S)
    # the offline sweep: live workers whose presence says online
    op.create_index(
        "ix_workers_online",
        "workers",
        ["last_seen"],
        schema=S,
        postgresql_where=sa.text("presence = 'online' AND revoked_at IS NULL"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("msg_id", sa.String(length=256), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("published_at", ts, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("msg_id", name=op.f("uq_outbox_msg_id")),
        schema=S,
    )
    op.create_index(op.f("ix_workers_outbox_published_at"), "outbox", ["published_at"], unique=False, schema=S)


def downgrade() -> None:
    op.drop_index(op.f("ix_workers_outbox_published_at"), table_name="outbox", schema=S)
    op.drop_table("outbox", schema=S)
    op.drop_index("ix_workers_online", table_name="workers", schema=S)
    for column in (
        "removed_reason",
        "drain_requested_at",
        "status_detail",
        "reported_status",
        "presence_seq",
        "presence",
        "public_key",
        "device_info",
        "invite_id",
        "pool_name",
    ):
        op.drop_column("workers", column, schema=S)
    op.alter_column("workers", "pool", type_=sa.String(64), existing_nullable=False, schema=S)
    for column in ("revoked_at", "configured", "uses", "max_uses", "multi_use", "pool", "name"):
        op.drop_column("worker_invites", column, schema=S)
