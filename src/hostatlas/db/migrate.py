"""Schema migrations with Alembic: the only way the schema is made, in production and in tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from hostatlas.db.engine import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# PostgreSQL advisory lock held while migrating: this constant plus the schema's name, so installs in other
# schemas of the same database (the tests' private schemas) do not wait for each other.
_MIGRATION_LOCK = 72685362


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    config = alembic_config(db.url)
    # A write connection, so SQLite takes its lock up front and concurrent migrators queue.
    with db.engine.execution_options(hostatlas_write=True).begin() as connection:
        if connection.dialect.name == "postgresql":
            # Several nodes starting (or `hostatlas migrate` run twice) at once queue here instead of racing to
            # create the same tables; whoever waited then finds the schema current and does nothing.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key, hashtext(current_schema()))"),
                               {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

