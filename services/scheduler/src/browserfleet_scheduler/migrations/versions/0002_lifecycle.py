"""lifecycle: admission columns, task logs, schedules

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


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.add_column("tasks", sa.Column("not_before", ts, nullable=True), schema="scheduler")
    op.add_column("tasks", sa.Column("dispatched_at", ts, nullable=True), schema="scheduler")
    op.add_column("tasks", sa.Column("pool", sa.String(64), nullable=True), schema="scheduler")
    op.add_column("tasks", sa.Column("plan", sa.String(64), nullable=True), schema="scheduler")
    op.add_column("tasks", sa.Column("schedule_id", sa.String(36), nullable=True), schema="scheduler")
    op.add_column("tasks", sa.Column("schedule_tick", ts, nullable=True), schema="scheduler")
    op.add_column("task_attempts", sa.Column("delivery", sa.Integer(), nullable=True), schema="scheduler")
    op.create_unique_constraint(
        "uq_tasks_schedule_id_schedule_tick", "tasks", ["schedule_id", "schedule_tick"], schema="scheduler"
    )
    # the admission scan: queued tasks by priority then age
    op.create_index(
        "ix_tasks_queued",
        "tasks",
        ["created_at", "id"],
        schema="scheduler",
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "ix_tasks_active_org",
        "tasks",
        ["org_id"],
        schema="scheduler",
        postgresql_where=sa.text("status IN ('assigned', 'running')"),
    )
    op.create_table(
        "task_logs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["scheduler.tasks.id"], name="fk_task_logs_task_id_tasks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_task_logs"),
        sa.UniqueConstraint("task_id", "attempt", "seq", name="uq_task_logs_task_id_attempt_seq"),
        schema="scheduler",
    )
    op.create_index("ix_task_logs_task_id_id", "task_logs", ["task_id", "id"], schema="scheduler")
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("template", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", ts, nullable=True),
        sa.Column("last_run_at", ts, nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("plan", sa.String(length=64), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
        schema="scheduler",
    )
    op.create_index("ix_scheduler_schedules_org_id", "schedules", ["org_id"], schema="scheduler")
    op.create_index("ix_schedules_due", "schedules", ["paused", "next_run_at"], schema="scheduler")


def downgrade() -> None:
    op.drop_table("schedules", schema="scheduler")
    op.drop_table("task_logs", schema="scheduler")
    op.drop_index("ix_tasks_active_org", table_name="tasks", schema="scheduler")
    op.drop_index("ix_tasks_queued", table_name="tasks", schema="scheduler")
    op.drop_constraint("uq_tasks_schedule_id_schedule_tick", "tasks", schema="scheduler")
    op.drop_column("task_attempts", "delivery", schema="scheduler")
    for column in ("schedule_tick", "schedule_id", "plan", "pool", "dispatched_at", "not_before"):
        op.drop_column("tasks", column, schema="scheduler")
