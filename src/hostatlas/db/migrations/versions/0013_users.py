"""users and memberships: the people who sign in to the dashboard and their roles in teams

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 04:20:00.000000
"""
from alembic import op
import sqlalchemy as sa
import hostatlas.db.base


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

# 64 bits on PostgreSQL; SQLite's INTEGER already is (and only INTEGER PRIMARY KEY is the rowid).
BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC = hostatlas.db.base.UTCDateTime


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('sessions_valid_after', UTC(), nullable=True),
    sa.Column('created_at', UTC(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    op.create_table('memberships',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('user_id', BIGINT, nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_at', UTC(), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_memberships_team_id_teams'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_memberships_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_memberships')),
    sa.UniqueConstraint('user_id', 'team_id', name='uq_memberships_user_team')
    )
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_memberships_team_id'), ['team_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_memberships_team_id'))
    op.drop_table('memberships')
    op.drop_table('users')
