"""incidents: incidents (manual and automatic, attached to their server's outage) and their timelines

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 23:40:00.000000
"""
from alembic import op
import sqlalchemy as sa
import hostatlas.db.base


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# 64 bits on PostgreSQL; SQLite's INTEGER already is (and only INTEGER PRIMARY KEY is the rowid).
BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC = hostatlas.db.base.UTCDateTime
UNRESOLVED = sa.text("status IN ('open', 'acknowledged')")


def upgrade() -> None:
    op.create_table('incidents',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('source_key', sa.String(length=200), nullable=True),
    sa.Column('server_id', BIGINT, nullable=True),
    sa.Column('service', sa.String(length=255), nullable=True),
    sa.Column('parent_id', BIGINT, nullable=True),
    sa.Column('suppressed', sa.Boolean(), nullable=False),
    sa.Column('detected_at', UTC(), nullable=False),
    sa.Column('acknowledged_at', UTC(), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=300), nullable=True),
    sa.Column('resolved_at', UTC(), nullable=True),
    sa.Column('resolved_by', sa.String(length=300), nullable=True),
    sa.Column('created_at', UTC(), nullable=False),
    sa.Column('updated_at', UTC(), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['incidents.id'], name=op.f('fk_incidents_parent_id_incidents'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_incidents_server_id_servers'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_incidents_team_id_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents'))
    )
    op.create_index('ix_incidents_team_status', 'incidents', ['team_id', 'status'], unique=False)
    op.create_index('ix_incidents_team_severity', 'incidents', ['team_id', 'severity'], unique=False)
    op.create_index('ix_incidents_team_server', 'incidents', ['team_id', 'server_id'], unique=False)
    op.create_index('ix_incidents_team_detected_at', 'incidents', ['team_id', 'detected_at'], unique=False)
    op.create_index('ix_incidents_source_key', 'incidents', ['team_id', 'source', 'source_key', 'id'], unique=False)
    op.create_index('uq_incidents_unresolved_key', 'incidents', ['team_id', 'source', 'source_key'], unique=True,
                    postgresql_where=UNRESOLVED, sqlite_where=UNRESOLVED)
    op.create_index('ix_incidents_parent_id', 'incidents', ['parent_id'], unique=False)
    op.create_index('ix_incidents_server_id', 'incidents', ['server_id'], unique=False)

    op.create_table('incident_entries',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('incident_id', BIGINT, nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.Column('at', UTC(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=300), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_incident_entries_incident_id_incidents'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_incident_entries_team_id_teams'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incident_entries'))
    )
    op.create_index('ix_incident_entries_incident_id', 'incident_entries', ['incident_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_table('incident_entries')
    op.drop_table('incidents')
