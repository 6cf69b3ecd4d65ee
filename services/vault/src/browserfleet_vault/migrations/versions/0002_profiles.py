"""profiles: encrypted browser storage states with a lease

Revision ID: 0002
Revises: 0001

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'profiles',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('org_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('ciphertext', sa.LargeBinary(), nullable=True),
        sa.Column('nonce', sa.LargeBinary(), nullable=True),
        sa.Column('data_key_id', sa.String(length=36), nullable=True),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('lease_task_id', sa.String(length=64), nullable=True),
        sa.Column('lease_token', sa.String(length=64), nullable=True),
        sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['data_key_id'], ['vault.data_keys.id'], name=op.f('fk_profiles_data_key_id_data_keys')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_profiles')),
        sa.UniqueConstraint('org_id', 'name', name='uq_profiles_org_name'),
        schema='vault',
    )
    op.create_index(op.f('ix_vault_profiles_org_id'), 'profiles', ['org_id'], unique=False, schema='vault')


def downgrade() -> None:
    op.drop_index(op.f('ix_vault_profiles_org_id'), table_name='profiles', schema='vault')
    op.drop_table('profiles', schema='vault')
