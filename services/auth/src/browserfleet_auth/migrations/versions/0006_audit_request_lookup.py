"""audit log: entries looked up by (request_id, org_id) through one index

The call-entry statements find an entry by `org_id = $ AND request_id = $`. With a single-column index on
each, a prepared statement's generic plan could probe `ix_auth_audit_log_org_id` and read every entry of the
organization (the whole log in a one-organization platform) for each call. The composite index replaces the
request_id one (it serves request_id alone as well). It ends with `id`: the close statement asks for the first
entry of a call (`min(id)`), which is then the index's first entry for the pair, where otherwise a plan could
walk the primary key from the oldest entry until it met the call's (the newest).

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_audit_log_request_id_org_id", "audit_log", ["request_id", "org_id", "id"], unique=False, schema="auth"
    )
    op.drop_index("ix_auth_audit_log_request_id", table_name="audit_log", schema="auth")


def downgrade() -> None:
    op.create_index("ix_auth_audit_log_request_id", "audit_log", ["request_id"], unique=False, schema="auth")
    op.drop_index("ix_audit_log_request_id_org_id", table_name="audit_log", schema="auth")
