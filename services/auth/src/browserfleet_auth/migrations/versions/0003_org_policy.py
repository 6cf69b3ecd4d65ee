"""organization policy: allowed domains, evaluate, proxy (typed as browserfleet_contracts.auth.OrgPolicy)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # `{}` is the default policy (no domain limit, no evaluate, no proxy): existing orgs keep behaving as before
    op.add_column("organizations", sa.Column("policy", _JSON, server_default="{}", nullable=False), schema="auth")


def downgrade() -> None:
    op.drop_column("organizations", "policy", schema="auth")
