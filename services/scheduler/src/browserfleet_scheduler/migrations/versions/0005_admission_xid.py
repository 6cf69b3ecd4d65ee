"""scheduler.admission_xid: the transaction that last admitted under the admission lock

A create admits in its own statement, whose snapshot is taken before it gets the lock; a sequence is read
outside of any snapshot, so the statement can tell whether the last admitter committed after its snapshot
(and then leaves the task to the admission pass rather than count slots from a stale view).

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE scheduler.admission_xid MINVALUE 0 START 0")


def downgrade() -> None:
    op.execute("DROP SEQUENCE scheduler.admission_xid")
