"""heartbeats: monitors, their ping log and status flips; teams get a ping key and the create-on-ping switch

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 19:10:00.000000
"""
from alembic import op
import sqlalchemy as sa
import hostatlas.db.base
import hostatlas.secretbox


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# 64 bits on PostgreSQL; SQLite's INTEGER already is (and only INTEGER PRIMARY KEY is the rowid).
BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC = hostatlas.db.base.UTCDateTime


def upgrade() -> None:
    # SQLite's ADD COLUMN rewrites no other table (batch mode would, and cascade deletes through it).
    op.add_column('teams', sa.Column('ping_key', sa.String(length=32), nullable=True))
    op.add_column('teams', sa.Column('ping_create', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index('uq_teams_ping_key', 'teams', ['ping_key'], unique=True)

    op.create_table('heartbeats',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('slug', sa.String(length=100), nullable=False),
    sa.Column('ping_token_hash', sa.String(length=64), nullable=False),
    sa.Column('ping_token', hostatlas.secretbox.Sealed(length=255), nullable=False),
    sa.Column('interval', sa.Integer(), nullable=True),
    sa.Column('schedule', sa.String(length=100), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('grace', sa.Integer(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('server_id', BIGINT, nullable=True),
    sa.Column('min_runtime', sa.Integer(), nullable=True),
    sa.Column('max_runtime', sa.Integer(), nullable=True),
    sa.Column('manual_resume', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('last_ping_at', UTC(), nullable=True),
    sa.Column('last_start_at', UTC(), nullable=True),
    sa.Column('open_runs', sa.JSON(), nullable=False),
    sa.Column('last_duration_s', sa.Float(), nullable=True),
    sa.Column('next_due_at', UTC(), nullable=True),
    sa.Column('deadline_at', UTC(), nullable=True),
    sa.Column('created_at', UTC(), nullable=False),
    sa.Column('updated_at', UTC(), nullable=False),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_heartbeats_server_id_servers'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_heartbeats_team_id_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_heartbeats')),
    sa.UniqueConstraint('ping_token_hash', name=op.f('uq_heartbeats_ping_token_hash')),
    sa.UniqueConstraint('team_id', 'slug', name='uq_heartbeats_team_slug')
    )
    op.create_index('ix_heartbeats_deadline_at', 'heartbeats', ['deadline_at'], unique=False)
    op.create_index('ix_heartbeats_team_status', 'heartbeats', ['team_id', 'status'], unique=False)
    op.create_index(op.f('ix_heartbeats_server_id'), 'heartbeats', ['server_id'], unique=False)

    op.create_table('heartbeat_tags',
    sa.Column('heartbeat_id', BIGINT, nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.ForeignKeyConstraint(['heartbeat_id'], ['heartbeats.id'], name=op.f('fk_heartbeat_tags_heartbeat_id_heartbeats'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_heartbeat_tags_team_id_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('heartbeat_id', 'tag', name=op.f('pk_heartbeat_tags'))
    )
    op.create_index('ix_heartbeat_tags_team_tag', 'heartbeat_tags', ['team_id', 'tag'], unique=False)

    op.create_table('heartbeat_pings',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('heartbeat_id', BIGINT, nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('exit_status', sa.Integer(), nullable=True),
    sa.Column('at', UTC(), nullable=False),
    sa.Column('rid', sa.String(length=64), nullable=True),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('remote_addr', sa.String(length=45), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('body_truncated', sa.Boolean(), nullable=False),
    sa.Column('too_often', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['heartbeat_id'], ['heartbeats.id'],
                            name=op.f('fk_heartbeat_pings_heartbeat_id_heartbeats'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_heartbeat_pings_team_id_teams'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_heartbeat_pings'))
    )
    op.create_index('ix_heartbeat_pings_heartbeat_id', 'heartbeat_pings', ['heartbeat_id', 'id'], unique=False)

    op.create_table('heartbeat_flips',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('heartbeat_id', BIGINT, nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.Column('at', UTC(), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=False),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('cause', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['heartbeat_id'], ['heartbeats.id'],
                            name=op.f('fk_heartbeat_flips_heartbeat_id_heartbeats'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_heartbeat_flips_team_id_teams'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_heartbeat_flips'))
    )
    op.create_index('ix_heartbeat_flips_heartbeat_id', 'heartbeat_flips', ['heartbeat_id', 'id'], unique=False)
    op.create_index('ix_heartbeat_flips_at', 'heartbeat_flips', ['at'], unique=False)


def downgrade() -> None:
    op.drop_table('heartbeat_flips')
    op.drop_table('heartbeat_pings')
    op.drop_table('heartbeat_tags')
    op.drop_table('heartbeats')
    op.drop_index('uq_teams_ping_key', table_name='teams')
    op.drop_column('teams', 'ping_create')
    op.drop_column('teams', 'ping_key')
