"""a registration repeated with the same invite and public key gets the same worker and key: its key nonce

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

S = "workers"


def upgrade() -> None:
    op.add_column("workers", sa.Column("key_nonce", sa.String(64), nullable=True), schema=S)
    op.create_index(
        "ix_workers_unseen",
        "workers",
        ["invite_id"],
        schema=S,
        postgresql_where=sa.text("key_nonce IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_workers_unseen", table_name="workers", schema=S)
    op.drop_column("workers", "key_nonce", schema=S)
