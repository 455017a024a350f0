"""ids, foreign keys and the other unsized integers become BIGINT on PostgreSQL (SQLite's INTEGER already is)

The API accepts ids up to 2^63-1 (http.types.Id); a 32-bit column made every id beyond 2^31-1 a 500 on
PostgreSQL ("integer out of range"), and would have run out of ids on a busy install (events, deliveries,
attempts). Each serial sequence is widened too, or it would stop at 2^31-1 whatever its column holds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 16:20:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

COLUMNS = {
    'teams': ('id',),
    'api_keys': ('id', 'team_id', 'rotated_from_id'),
    'events': ('id', 'team_id', 'resource_id', 'server_id'),
    'servers': ('id', 'team_id'),
    'webhooks': ('id', 'team_id'),
    'agent_config_overrides': ('id', 'team_id', 'server_id'),
    'agent_tokens': ('id', 'server_id', 'team_id'),
    'certificates': ('id', 'server_id', 'team_id'),
    'containers': ('id', 'server_id', 'team_id'),
    'domains': ('id', 'server_id', 'team_id'),
    'inventory_changes': ('id', 'server_id', 'team_id'),
    'server_tags': ('server_id', 'team_id'),
    'services': ('id', 'server_id', 'team_id'),
    'webhook_deliveries': ('id', 'team_id', 'webhook_id', 'event_id'),
    'webhook_attempts': ('id', 'delivery_id', 'response_status'),
}


def _retype(sql_type: str) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table, columns in COLUMNS.items():
        op.execute(f'ALTER TABLE {table} ' + ', '.join(f'ALTER COLUMN {column} TYPE {sql_type}' for column in columns))
        if 'id' in columns:
            sequence = op.get_bind().execute(sa.text('SELECT pg_get_serial_sequence(:table, :column)'),
                                             {'table': table, 'column': 'id'}).scalar()
            if sequence:
                op.execute(f'ALTER SEQUENCE {sequence} AS {sql_type}')


def upgrade() -> None:
    _retype('bigint')


def downgrade() -> None:
    _retype('integer')
