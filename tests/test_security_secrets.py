"""Secrets stay secret: none in any log line (failing writes included), webhook secrets sealed at rest
with the platform key, existing rows sealed by the migration, the key rotated with `hostatlas secrets rotate`."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import String, inspect, select, text, type_coerce

from hostatlas import secretbox
from hostatlas.db import migrate
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.webhooks.models import Webhook
from tests.conftest import private_postgres_schema
from tests.support import Story, bearer, enrol, hostatlas_command, running_server

pytestmark = pytest.mark.long_running(45)

PUBLIC_URL = "https://93.184.216.34/hooks/T024BE7LD/B0"
# A raw credential of any kind: API key, agent token or webhook secret.
RAW_CREDENTIAL = re.compile(r"(sk_live_|agt_|whsec_)[A-Za-z0-9+/=_-]{16,}")
REFUSING_TRIGGERS = {
    "webhooks": "BEFORE INSERT OR UPDATE",
    "api_keys": "BEFORE INSERT",
    "agent_tokens": "BEFORE INSERT",
}


@pytest.fixture
def keyring_restored() -> Iterator[None]:
    """Tests that install another platform key put the run's back afterwards."""
    previous = secretbox.current()
    yield
    secretbox.install(previous)


def _every_stored_value(db: Database) -> str:
    with db.engine.connect() as connection:
        return "\n".join(repr(tuple(row)) for table in inspect(connection).get_table_names()
                         for row in connection.execute(text(f'SELECT * FROM "{table}"')))


def _read_elsewhere(path: Path) -> bytes:
    """Read by another process: closing a SQLite file here would drop this process's locks on it."""
    reader = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"
    return subprocess.run([sys.executable, "-c", reader, str(path)], capture_output=True, check=True).stdout


def _sqlite_bytes(db: Database) -> bytes:
    path = Path(db.engine.url.database or "")
    return b"".join(_read_elsewhere(candidate) for candidate in (path, path.with_name(path.name + "-wal"))
                    if candidate.exists())


def _install_refusing_triggers(db: Database) -> None:
    with db.engine.begin() as connection:
        # Reports the row like PostgreSQL's own constraint errors do ("Failing row contains ...").
        connection.execute(text("CREATE FUNCTION refuse_for_test() RETURNS trigger LANGUAGE plpgsql AS "
                                "$$ BEGIN RAISE EXCEPTION 'refused for the test: %', NEW; END $$"))
        for table, when in REFUSING_TRIGGERS.items():
            connection.execute(text(f"CREATE TRIGGER refuse_for_test {when} ON {table} "
                                    "FOR EACH ROW EXECUTE FUNCTION refuse_for_test()"))


def _drop_refusing_triggers(db: Database) -> None:
    with db.engine.begin() as connection:
        for table in REFUSING_TRIGGERS:
            connection.execute(text(f"DROP TRIGGER IF EXISTS refuse_for_test ON {table}"))
        connection.execute(text("DROP FUNCTION IF EXISTS refuse_for_test()"))


def test_failing_writes_on_postgresql_log_no_secret(db: Database, story: Story, database_url: str,
                                                    tmp_path: Path) -> None:
    if db.is_sqlite:
        pytest.skip("the failing writes are driven on PostgreSQL")
    with running_server(tmp_path, {"HOSTATLAS_DATABASE_URL": database_url}, extra_args=("--no-worker",)) as base, \
            httpx.Client(base_url=base, headers=bearer(story.admin_a)) as api:
        _, agent_token = enrol(api, story.admin_a)
        created = api.post("/api/v1/webhooks", json={"url": PUBLIC_URL})
        assert created.status_code == 201, created.text
        _install_refusing_triggers(db)
        try:
            failed = [api.post("/api/v1/webhooks", json={"url": PUBLIC_URL + "/second"}),
                      api.post(f"/api/v1/webhooks/{created.json()['id']}/rotate-secret", json={}),
                      api.post("/api/v1/api-keys", json={"name": "refused", "scopes": ["servers:read"]}),
                      api.post("/api/v1/agent/register", json={**_facts("refused-host")})]
        finally:
            _drop_refusing_triggers(db)
    assert [answer.status_code for answer in failed] == [500, 500, 500, 500]
    logged = "\n".join(path.read_text() for path in tmp_path.glob("serve-*.log"))
    assert logged.count("refused for the test") >= 4  # each failure is in the log...
    assert "parameters hidden" in logged  # ...without its statement's parameters
    for raw in (story.admin_a, story.reader_a, story.admin_b, agent_token, created.json()["secret"]):
        assert raw not in logged and raw[-20:] not in logged
    assert RAW_CREDENTIAL.findall(logged) == []


def _facts(machine_id: str) -> dict[str, object]:
    return {"machine_id": machine_id, "hostname": machine_id, "ip_address": "10.0.1.12", "os": "Linux",
            "kernel": "6.2", "cpu_cores": 2, "ram_total_mb": 2048, "agent_version": "1.4.2"}


def test_no_raw_secret_key_or_token_is_stored(client: TestClient, story: Story, db: Database) -> None:
    created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a), json={"url": PUBLIC_URL}).json()
    rotated = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", headers=bearer(story.admin_a),
                          json={"grace_seconds": 3600}).json()
    _, agent_token = enrol(client, story.admin_a)
    raws = [created["secret"], rotated["secret"], agent_token, story.admin_a, story.reader_a, story.admin_b]

    stored = _every_stored_value(db)
    assert RAW_CREDENTIAL.findall(stored) == []
    assert all(raw not in stored and raw[-20:] not in stored for raw in raws)
    if db.is_sqlite:
        on_disk = _sqlite_bytes(db)
        assert all(raw[-20:].encode() not in on_disk for raw in raws)
    # Sealed, the secrets still open to what was shown, so deliveries are signed as before.
    with db.session(write=False) as session:
        webhook = session.get_one(Webhook, created["id"])
        assert (webhook.secret, webhook.previous_secret) == (rotated["secret"], created["secret"])
        sealed = session.execute(select(type_coerce(Webhook.secret, String()))).scalar_one()
    assert secretbox.current().open(sealed) == rotated["secret"]


def test_the_platform_key_file_is_made_on_first_start_with_mode_0600(tmp_path: Path) -> None:
    env = {"HOSTATLAS_DATA_DIR": str(tmp_path / "data"), "HOSTATLAS_SECRET_KEY": ""}
    with running_server(tmp_path, env, extra_args=("--no-worker",)):
        pass
    key_file = tmp_path / "data" / secretbox.KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first = key_file.read_bytes()
    with running_server(tmp_path, env, extra_args=("--no-worker",)):
        pass
    assert key_file.read_bytes() == first  # made once, then reused
    keyring = secretbox.load(Settings(_env_file=None, data_dir=tmp_path / "data", secret_key=None))  # type: ignore[call-arg]
    assert keyring.open(Fernet(first.strip()).encrypt(b"whsec_x").decode()) == "whsec_x"


def test_a_malformed_platform_key_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HOSTATLAS_SECRET_KEY"):
        secretbox.load(Settings(_env_file=None, data_dir=tmp_path, secret_key="not a key"))  # type: ignore[call-arg]


def test_rotating_the_platform_key_reseals_every_secret(db: Database, story: Story, database_url: str,
                                                        tmp_path: Path, keyring_restored: None) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    secretbox.install(secretbox.Keyring([old]))
    with db.session(write=True) as session:
        session.add(Webhook(team_id=story.team_a, url=PUBLIC_URL, secret="whsec_current", previous_secret="whsec_old"))
    env = {**os.environ, "HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_SECRET_KEY": f"{new},{old}"}
    done = subprocess.run([*hostatlas_command(), "secrets", "rotate"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2 secrets resealed" in done.stdout.splitlines()[-1]

    secretbox.install(secretbox.Keyring([new]))  # the old key is gone now
    with db.session(write=False) as session:
        webhook = session.scalars(select(Webhook)).one()
        assert (webhook.secret, webhook.previous_secret) == ("whsec_current", "whsec_old")


@pytest.fixture
def fresh_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the run's backend, for migrations from an earlier revision."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with private_postgres_schema("hostatlas_fresh") as url:
        yield url


def test_the_migration_seals_existing_plaintext_secrets(fresh_database_url: str, keyring_restored: None) -> None:
    db = Database(fresh_database_url)
    try:
        migrate.upgrade(db, "0005")
        with db.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO webhooks (team_id, url, description, enabled, enabled_since, secret, previous_secret, "
                "created_at, updated_at) SELECT id, :url, '', true, :at, 'whsec_plain', 'whsec_older', :at, :at "
                "FROM teams"), {"url": PUBLIC_URL, "at": "2026-01-01 00:00:00"})
            connection.execute(text(
                "INSERT INTO webhook_deliveries (delivery_id, team_id, webhook_id, event, body, status, attempts, "
                "created_at) SELECT 'del_1', team_id, id, 'webhook.test', '{}', 'pending', 0, :at FROM webhooks"),
                {"at": "2026-01-01 00:00:00"})
        secretbox.install(secretbox.Keyring([Fernet.generate_key().decode()]))
        migrate.upgrade(db)
        stored = _every_stored_value(db)
        assert "whsec_plain" not in stored and "whsec_older" not in stored
        if db.is_sqlite:  # nor left in the file's freed space, once the log of earlier writes is checkpointed
            with db.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            assert b"whsec_" not in _sqlite_bytes(db)
        with db.session(write=False) as session:
            webhook = session.scalars(select(Webhook)).one()
            assert (webhook.secret, webhook.previous_secret) == ("whsec_plain", "whsec_older")
            # Widening the columns kept the webhook's deliveries (no table rebuild cascading into them).
            assert session.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar_one() == 1
    finally:
        db.dispose()
