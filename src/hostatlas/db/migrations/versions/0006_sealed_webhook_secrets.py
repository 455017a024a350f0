"""webhooks: signing secrets sealed with the platform key (secretbox); columns widened for the ciphertext

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 16:30:00.000000
"""
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import op
import sqlalchemy as sa

from hostatlas import secretbox


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

COLUMNS = (('secret', False), ('previous_secret', True))
PLAIN_PREFIX = 'whsec_'


def upgrade() -> None:
    with _freed_pages_erased():
        _retype(255, was=100)
        _rewrite(sealing=True)


def downgrade() -> None:
    with _freed_pages_erased():
        _rewrite(sealing=False)
        _retype(100, was=255)


def _retype(length: int, *, was: int) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        for column, nullable in COLUMNS:
            op.alter_column('webhooks', column, existing_type=sa.String(was), type_=sa.String(length),
                            existing_nullable=nullable)
        return
    # Batch mode would rebuild the table, and dropping the old one under PRAGMA foreign_keys deletes every
    # delivery through ON DELETE CASCADE. SQLite's own ADD, DROP and RENAME COLUMN rewrite no other table.
    for column, nullable in COLUMNS:
        # SQLite adds a NOT NULL column only with a default; every row gets its value just below.
        constraint = '' if nullable else " NOT NULL DEFAULT ''"
        op.execute(f'ALTER TABLE webhooks ADD COLUMN {column}_retyped VARCHAR({length}){constraint}')
        op.execute(f'UPDATE webhooks SET {column}_retyped = {column}')
        op.execute(f'ALTER TABLE webhooks DROP COLUMN {column}')
        op.execute(f'ALTER TABLE webhooks RENAME COLUMN {column}_retyped TO {column}')


def _rewrite(*, sealing: bool) -> None:
    """Seal the secrets still in clear (or, going down, open them); the platform key comes from the settings."""
    connection = op.get_bind()
    rows = connection.execute(sa.text('SELECT id, secret, previous_secret FROM webhooks')).all()
    if not rows:
        return
    keyring = secretbox.current()

    def changed(value: str | None) -> str | None:
        if value is None or value.startswith(PLAIN_PREFIX) != sealing:
            return value
        return keyring.seal(value) if sealing else keyring.open(value)

    for row in rows:
        connection.execute(sa.text('UPDATE webhooks SET secret = :secret, previous_secret = :previous WHERE id = :id'),
                           {'id': row.id, 'secret': changed(row.secret), 'previous': changed(row.previous_secret)})


@contextmanager
def _freed_pages_erased() -> Iterator[None]:
    """On SQLite, overwrite freed space with zeros meanwhile, so the clear values do not linger in the file."""
    connection = op.get_bind()
    if connection.dialect.name != 'sqlite':
        yield
        return
    before = connection.exec_driver_sql('PRAGMA secure_delete').scalar()
    connection.exec_driver_sql('PRAGMA secure_delete = ON')
    try:
        yield
    finally:
        connection.exec_driver_sql(f'PRAGMA secure_delete = {int(before or 0)}')
