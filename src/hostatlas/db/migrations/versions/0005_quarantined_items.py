"""quarantined_items: where pipelines set aside items that keep failing

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 15:40:00.000000
"""
from alembic import op
import sqlalchemy as sa
import hostatlas.db.base


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# 64 bits on PostgreSQL; SQLite's INTEGER already is (and only INTEGER PRIMARY KEY is the rowid).
BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('quarantined_items',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('pipeline', sa.String(length=64), nullable=False),
    sa.Column('team_id', BIGINT, nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('failures', BIGINT, nullable=False),
    sa.Column('created_at', hostatlas.db.base.UTCDateTime(), nullable=False),
    sa.Column('last_failed_at', hostatlas.db.base.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quarantined_items'))
    )
    with op.batch_alter_table('quarantined_items', schema=None) as batch_op:
        batch_op.create_index('ix_quarantined_items_pipeline', ['pipeline', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('quarantined_items', schema=None) as batch_op:
        batch_op.drop_index('ix_quarantined_items_pipeline')
    op.drop_table('quarantined_items')
