"""tasks (org_id, dispatched_at): an org's last dispatch read from the index's end, not from its whole history

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_tasks_org_id_dispatched_at", "tasks", ["org_id", "dispatched_at"], unique=False, schema="scheduler"
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_org_id_dispatched_at", table_name="tasks", schema="scheduler")
