"""tasks: fewer index entries per row version

A task's every status change is a new row version written to each of its indexes (`status` is indexed, so no
update is HOT). Four of them held an entry per version for nothing:

* `ix_scheduler_tasks_org_id`: its one column leads three other indexes; dropped.
* `ix_scheduler_tasks_status`: every version of every task ever made; what reads it (the timeout reaper,
  `status IN` the unfinished statuses) needs only the unfinished ones: `ix_tasks_unfinished`, partial.
* `uq_tasks_org_id_idempotency_key`, `uq_tasks_schedule_id_schedule_tick`: NULL keys never conflict, yet each
  version without a key had an entry; now unique indexes over the rows that have one (same uniqueness; an
  `ON CONFLICT` names the predicate to infer them).
* `ix_tasks_org_id_dispatched_at`: read only for rows with a dispatch time; partial.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFINISHED = "status IN ('pending', 'queued', 'assigned', 'running')"


def upgrade() -> None:
    s = "scheduler"
    op.drop_index("ix_scheduler_tasks_org_id", table_name="tasks", schema=s)
    op.drop_index("ix_scheduler_tasks_status", table_name="tasks", schema=s)
    op.create_index(
        "ix_tasks_unfinished", "tasks", ["status"], schema=s, postgresql_where=sa.text(_UNFINISHED)
    )
    op.drop_constraint("uq_tasks_org_id_idempotency_key", "tasks", schema=s, type_="unique")
    op.create_index(
        "uq_tasks_org_id_idempotency_key", "tasks", ["org_id", "idempotency_key"], unique=True, schema=s,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )  # fmt: skip
    op.drop_constraint("uq_tasks_schedule_id_schedule_tick", "tasks", schema=s, type_="unique")
    op.create_index(
        "uq_tasks_schedule_id_schedule_tick", "tasks", ["schedule_id", "schedule_tick"], unique=True, schema=s,
        postgresql_where=sa.text("schedule_id IS NOT NULL"),
    )  # fmt: skip
    op.drop_index("ix_tasks_org_id_dispatched_at", table_name="tasks", schema=s)
    op.create_index(
        "ix_tasks_org_id_dispatched_at", "tasks", ["org_id", "dispatched_at"], schema=s,
        postgresql_where=sa.text("dispatched_at IS NOT NULL"),
    )  # fmt: skip


def downgrade() -> None:
    s = "scheduler"
    op.drop_index("ix_tasks_org_id_dispatched_at", table_name="tasks", schema=s)
    op.create_index("ix_tasks_org_id_dispatched_at", "tasks", ["org_id", "dispatched_at"], schema=s)
    op.drop_index("uq_tasks_schedule_id_schedule_tick", table_name="tasks", schema=s)
    op.create_unique_constraint(
        "uq_tasks_schedule_id_schedule_tick", "tasks", ["schedule_id", "schedule_tick"], schema=s
    )
    op.drop_index("uq_tasks_org_id_idempotency_key", table_name="tasks", schema=s)
    op.create_unique_constraint(
        "uq_tasks_org_id_idempotency_key", "tasks", ["org_id", "idempotency_key"], schema=s
    )
    op.drop_index("ix_tasks_unfinished", table_name="tasks", schema=s)
    op.create_index("ix_scheduler_tasks_status", "tasks", ["status"], schema=s)
    op.create_index("ix_scheduler_tasks_org_id", "tasks", ["org_id"], schema=s)
