"""alert rules: rules, their pending and firing series, and every state change

Teams created from now on get the default rules where they are created (``alerts.service.create_default_rules``).
Of the teams that exist already, only those without a server get them here: that is every fresh install's
``default`` team (made by 0001 in the same run), and an upgrade never finds rules it did not ask for firing on
servers it already watches.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 00:00:00.000000
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa
import hostatlas.db.base


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# 64 bits on PostgreSQL; SQLite's INTEGER already is (and only INTEGER PRIMARY KEY is the rowid).
BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC = hostatlas.db.base.UTCDateTime


def upgrade() -> None:
    op.create_table('alert_rules',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('metric', sa.String(length=128), nullable=False),
    sa.Column('label_filters', sa.JSON(), nullable=False),
    sa.Column('aggregation', sa.String(length=8), nullable=False),
    sa.Column('window_s', sa.Integer(), nullable=False),
    sa.Column('operator', sa.String(length=2), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('for_s', sa.Integer(), nullable=False),
    sa.Column('recovery_threshold', sa.Float(), nullable=True),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('server_ids', sa.JSON(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('no_data', sa.String(length=8), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('next_evaluation_at', UTC(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('created_at', UTC(), nullable=False),
    sa.Column('updated_at', UTC(), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_alert_rules_team_id_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_rules'))
    )
    op.create_index('ix_alert_rules_next_evaluation_at', 'alert_rules', ['next_evaluation_at'], unique=False)
    op.create_index('ix_alert_rules_team_id', 'alert_rules', ['team_id', 'id'], unique=False)

    op.create_table('alert_states',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('rule_id', BIGINT, nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.Column('server_id', BIGINT, nullable=False),
    sa.Column('labels', sa.String(length=1024), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('since', UTC(), nullable=False),
    sa.Column('pending_since', UTC(), nullable=True),
    sa.Column('last_value', sa.Float(), nullable=True),
    sa.Column('last_evaluated_at', UTC(), nullable=False),
    sa.Column('incident_id', BIGINT, nullable=True),
    sa.Column('suppressed', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_alert_states_incident_id_incidents'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['rule_id'], ['alert_rules.id'], name=op.f('fk_alert_states_rule_id_alert_rules'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_alert_states_server_id_servers'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_alert_states_team_id_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_states')),
    sa.UniqueConstraint('rule_id', 'server_id', 'labels', name='uq_alert_states_rule_server_labels')
    )
    op.create_index('ix_alert_states_team_id', 'alert_states', ['team_id'], unique=False)
    op.create_index(op.f('ix_alert_states_server_id'), 'alert_states', ['server_id'], unique=False)

    op.create_table('alert_transitions',
    sa.Column('id', BIGINT, nullable=False),
    sa.Column('rule_id', BIGINT, nullable=False),
    sa.Column('team_id', BIGINT, nullable=False),
    sa.Column('server_id', BIGINT, nullable=False),
    sa.Column('labels', sa.String(length=1024), nullable=False),
    sa.Column('at', UTC(), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=False),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('incident_id', BIGINT, nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'],
                            name=op.f('fk_alert_transitions_incident_id_incidents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['rule_id'], ['alert_rules.id'], name=op.f('fk_alert_transitions_rule_id_alert_rules'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_alert_transitions_server_id_servers'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_alert_transitions_team_id_teams'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_transitions'))
    )
    op.create_index('ix_alert_transitions_rule_id', 'alert_transitions', ['rule_id', 'id'], unique=False)
    op.create_index('ix_alert_transitions_at', 'alert_transitions', ['at'], unique=False)
    op.create_index(op.f('ix_alert_transitions_server_id'), 'alert_transitions', ['server_id'], unique=False)
    _default_rules_for_teams_without_servers()


# alerts.service.DEFAULT_RULES as of this revision (a migration must not change when that constant does).
_DEFAULTS = (
    ("Disk almost full", "Average disk use of 90% or more for 5 minutes", "disk.used_percent", 90.0, 300, "critical"),
    ("Memory almost exhausted", "Average memory use of 95% or more for 10 minutes", "mem.used_percent", 95.0, 600,
     "warning"),
    ("CPU saturated", "Average CPU use of 95% or more for 15 minutes", "cpu.percent", 95.0, 900, "warning"),
)


def _default_rules_for_teams_without_servers() -> None:
    bind = op.get_bind()
    teams = [row[0] for row in bind.execute(sa.text(
        "SELECT id FROM teams WHERE NOT EXISTS (SELECT 1 FROM servers WHERE servers.team_id = teams.id) ORDER BY id"))]
    if not teams:
        return
    now = datetime.now(timezone.utc)
    rules = sa.table("alert_rules", *(sa.column(name) for name in (
        "team_id", "name", "description", "metric", "label_filters", "aggregation", "window_s", "operator",
        "threshold", "for_s", "recovery_threshold", "severity", "scope", "server_ids", "tags", "no_data", "enabled",
        "next_evaluation_at", "last_error", "created_at", "updated_at")))
    rules.c.label_filters.type = rules.c.server_ids.type = rules.c.tags.type = sa.JSON()
    rules.c.next_evaluation_at.type = rules.c.created_at.type = rules.c.updated_at.type = UTC()
    op.bulk_insert(rules, [
        {"team_id": team_id, "name": name, "description": description, "metric": metric, "label_filters": {},
         "aggregation": "avg", "window_s": 300, "operator": ">=", "threshold": threshold, "for_s": for_s,
         "recovery_threshold": None, "severity": severity, "scope": "all", "server_ids": [], "tags": [],
         "no_data": "keep", "enabled": True, "next_evaluation_at": now, "last_error": None, "created_at": now,
         "updated_at": now}
        for team_id in teams for name, description, metric, threshold, for_s, severity in _DEFAULTS])


def downgrade() -> None:
    op.drop_table('alert_transitions')
    op.drop_table('alert_states')
    op.drop_table('alert_rules')
