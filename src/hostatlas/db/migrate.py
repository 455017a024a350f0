"""Schema migrations with Alembic: the only way the schema is made, in production and in tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from hostatlas.db.engine import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    config = alembic_config(db.url)
    # A write connection, so SQLite takes its lock up front and concurrent migrators queue.
    with db.engine.execution_options(hostatlas_write=True).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

