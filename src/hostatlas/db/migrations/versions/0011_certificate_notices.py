"""certificate_notices: the SSL expiry thresholds each certificate (or domain) has crossed, per not_after

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 00:10:00.000000
"""
from alembic import op
import sqlalchemy as sa
import hostatlas.db.base


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# 64 bits on PostgreSQL; SQLite's INTEGER already is (and only INTEGER PRIMARY KEY is the rowid).
BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC = hostatlas.db.base.UTCDateTime


def upgrade() -> None:
    op.create_table('certificate_notices',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.Column('server_id', BIGINT, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=1024), nullable=False),
    sa.Column('not_after', UTC(), nullable=False),
    sa.Column('threshold_days', sa.Integer(), nullable=False),
    sa.Column('created_at', UTC(), nullable=False),
    sa.Column('resolved_at', UTC(), nullable=True),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_certificate_notices_server_id_servers'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_certificate_notices_team_id_teams'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_certificate_notices')),
    sa.UniqueConstraint('team_id', 'server_id', 'kind', 'name', 'not_after', 'threshold_days',
                        name='uq_certificate_notices_item')
    )
    op.create_index('ix_certificate_notices_open', 'certificate_notices', ['threshold_days', 'resolved_at'],
                    unique=False)
    op.create_index('ix_certificate_notices_server_id', 'certificate_notices', ['server_id'], unique=False)


def downgrade() -> None:
    op.drop_table('certificate_notices')
