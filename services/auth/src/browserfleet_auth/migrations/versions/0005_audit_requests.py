"""audit log: the gateway's call each entry records (request id, route, answer status)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("request_id", sa.String(length=64), nullable=True), schema="auth")
    op.add_column("audit_log", sa.Column("route", sa.String(length=200), nullable=True), schema="auth")
    op.add_column("audit_log", sa.Column("status", sa.Integer(), nullable=True), schema="auth")
    op.create_index(
        op.f("ix_auth_audit_log_request_id"), "audit_log", ["request_id"], unique=False, schema="auth"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_auth_audit_log_request_id"), table_name="audit_log", schema="auth")
    op.drop_column("audit_log", "status", schema="auth")
    op.drop_column("audit_log", "route", schema="auth")
    op.drop_column("audit_log", "request_id", schema="auth")
