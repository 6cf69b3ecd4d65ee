"""identity: api keys, audit log, login throttle, platform operator

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("platform_operator", sa.Boolean(), server_default="false", nullable=False),
        schema="auth",
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", _JSON, server_default="[]", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["auth.organizations.id"], name=op.f("fk_api_keys_org_id_organizations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        schema="auth",
    )
    op.create_index(op.f("ix_auth_api_keys_org_id"), "api_keys", ["org_id"], unique=False, schema="auth")
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("org_id", sa.String(length=36), nullable=True),
        sa.Column("actor_user_id", sa.String(length=36), nullable=True),
        sa.Column("actor_api_key_id", sa.String(length=36), nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("target", sa.String(length=320), nullable=True),
        sa.Column("detail", _JSON, server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        schema="auth",
    )
    op.create_index(op.f("ix_auth_audit_log_at"), "audit_log", ["at"], unique=False, schema="auth")
    op.create_index(op.f("ix_auth_audit_log_action"), "audit_log", ["action"], unique=False, schema="auth")
    op.create_index(op.f("ix_auth_audit_log_org_id"), "audit_log", ["org_id"], unique=False, schema="auth")
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttle")),
        schema="auth",
    )


def downgrade() -> None:
    op.drop_table("login_throttle", schema="auth")
    op.drop_index(op.f("ix_auth_audit_log_org_id"), table_name="audit_log", schema="auth")
    op.drop_index(op.f("ix_auth_audit_log_action"), table_name="audit_log", schema="auth")
    op.drop_index(op.f("ix_auth_audit_log_at"), table_name="audit_log", schema="auth")
    op.drop_table("audit_log", schema="auth")
    op.drop_index(op.f("ix_auth_api_keys_org_id"), table_name="api_keys", schema="auth")
    op.drop_table("api_keys", schema="auth")
    op.drop_column("users", "platform_operator", schema="auth")
