"""audit log: pages keep room for the close of the entries they hold (fillfactor 70)

Every state-changing call writes its entry twice: opened (an INSERT) and closed moments later (an UPDATE of
status, outcome, target and detail, none of them indexed). The close can be a HOT update, which writes no
index entry, only when the entry's page has room for the new version; pages filled to the brim by a burst of
opens had none, so most closes (56 % in a 4,000-task burst) wrote a new version on another page and an entry
into each of the log's five indexes. With 30 % of each new page left free the closes stay on their page.
Only pages written from now on are affected; nothing is rewritten.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLFACTOR = 70


def upgrade() -> None:
    op.execute(f"ALTER TABLE auth.audit_log SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    op.execute("ALTER TABLE auth.audit_log RESET (fillfactor)")
