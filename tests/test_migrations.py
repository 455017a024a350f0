"""The migrations make exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from hostatlas.db.engine import Database
from hostatlas.db.migrate import upgrade
from hostatlas.models import metadata
from tests.conftest import _postgres_problem, private_postgres_schema, require_service
from tests.support import hostatlas_command


def test_the_migrated_schema_is_the_models_schema(migrated_db: Database) -> None:
    with migrated_db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == [], "a model changed without a migration (or the reverse)"


def test_default_alert_rules_go_to_teams_without_servers_only(tmp_path: Path) -> None:
    """0010 gives a fresh install's default team the default rules, and a team already watching servers none."""
    db = Database(f"sqlite:///{tmp_path / 'upgrade.db'}")
    try:
        upgrade(db, "0009")
        with db.engine.begin() as connection:
            connection.execute(text("INSERT INTO teams (slug, name, plan, created_at) VALUES "
                                    "('watching', 'Watching', 'free', '2026-01-01 00:00:00')"))
            team_id = connection.execute(text("SELECT id FROM teams WHERE slug = 'watching'")).scalar_one()
            connection.execute(text(
                "INSERT INTO servers (team_id, machine_id, hostname, status, last_seen_at, tags, created_at) VALUES "
                "(:team, 'm-1', 'web-1', 'online', '2026-01-01 00:00:00', '[]', '2026-01-01 00:00:00')"),
                {"team": team_id})
        upgrade(db)
        with db.engine.connect() as connection:
            rules = connection.execute(text(
                "SELECT t.slug, r.metric, r.threshold, r.for_s, r.severity FROM alert_rules r "
                "JOIN teams t ON t.id = r.team_id ORDER BY t.slug, r.metric")).all()
        assert [tuple(row) for row in rules] == [("default", "cpu.percent", 95.0, 900, "warning"),
                                                 ("default", "disk.used_percent", 90.0, 300, "critical"),
                                                 ("default", "mem.used_percent", 95.0, 600, "warning")]
    finally:
        db.dispose()



def test_concurrent_migrations_on_postgresql_queue_instead_of_failing(tmp_path: Path) -> None:
    """Nodes that start together all migrate: on PostgreSQL they take turns (an advisory lock), and all succeed."""
    problem = _postgres_problem()
    require_service("PostgreSQL", problem is None, problem or "")
    with private_postgres_schema("hostatlas_migrate") as url:
        env = {**os.environ, "HOSTATLAS_DATABASE_URL": url, "HOSTATLAS_DATA_DIR": str(tmp_path)}
        runs = [subprocess.Popen([*hostatlas_command(), "migrate"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT) for _ in range(3)]
        outputs = [run.communicate(timeout=120)[0].decode(errors="replace") for run in runs]
        assert [run.returncode for run in runs] == [0, 0, 0], outputs
        db = Database(url)
        try:
            with db.engine.connect() as connection:
                assert len(connection.execute(text("SELECT version_num FROM alembic_version")).all()) == 1
                assert compare_metadata(MigrationContext.configure(connection), metadata) == []
        finally:
            db.dispose()
