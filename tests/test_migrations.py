"""The migrations make exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hostatlas.db.engine import Database
from hostatlas.models import metadata


def test_the_migrated_schema_is_the_models_schema(migrated_db: Database) -> None:
    with migrated_db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == [], "a model changed without a migration (or the reverse)"
