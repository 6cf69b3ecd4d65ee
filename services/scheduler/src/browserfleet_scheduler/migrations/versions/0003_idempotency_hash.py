"""tasks.idempotency_hash: the body an Idempotency-Key was first used with

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # nullable: tasks made before keep answering their key for any body (nothing to compare with)
    op.add_column("tasks", sa.Column("idempotency_hash", sa.String(64), nullable=True), schema="scheduler")


def downgrade() -> None:
    op.drop_column("tasks", "idempotency_hash", schema="scheduler")
