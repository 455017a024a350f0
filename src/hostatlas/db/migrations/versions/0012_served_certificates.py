"""domains.certificate, served_certificate and reload_needed; certificates.fingerprint_sha256: "renewed but
not reloaded" (the certificate a web server serves is not the one on disk)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 00:10:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.add_column(sa.Column('certificate', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('served_certificate', sa.JSON(), nullable=True))
        # Rows discovered before this know neither certificate: nothing to reload.
        batch_op.add_column(sa.Column('reload_needed', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index('ix_domains_team_reload_needed', ['team_id', 'reload_needed'], unique=False)
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fingerprint_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_column('fingerprint_sha256')
    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.drop_index('ix_domains_team_reload_needed')
        batch_op.drop_column('reload_needed')
        batch_op.drop_column('served_certificate')
        batch_op.drop_column('certificate')
