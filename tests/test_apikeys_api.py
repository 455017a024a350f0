"""The /api/v1/api-keys resource: create, list, get, rename, isolation, storage and usage tracking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, inspect, text

from hostatlas.apikeys import service
from hostatlas.apikeys.usage import KeyUsageTracker
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.errors import NotFound
from hostatlas.http import runtime
from tests.support import Story, bearer


def test_create_returns_the_raw_key_once(client: TestClient, story: Story) -> None:
    response = client.post("/api/v1/api-keys", headers=bearer(story.admin_a),
                           json={"name": "CI/CD Pipeline", "scopes": ["servers:read", "metrics:read"],
                                 "expires_at": "2099-06-21T00:00:00Z"})
    assert response.status_code == 201
    created = response.json()
    raw = created["key"]
    assert raw.startswith("sk_live_")
    assert created["masked_key"] == "sk_live_" + "•" * 16 + raw[-4:]
    assert created["status"] == "active"
    assert created["expires_at"] == "2099-06-21T00:00:00Z"
    assert created["scopes"] == ["metrics:read", "servers:read"]

    shown = client.get(f"/api/v1/api-keys/{created['id']}", headers=bearer(story.admin_a)).json()
    assert "key" not in shown
    assert raw not in str(client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).json())
    # The new key works, with its own scopes only.
    assert client.get("/api/v1/api-keys", headers=bearer(raw)).status_code == 403


def test_list_shows_the_team_dashboard_fields(client: TestClient, story: Story) -> None:
    body = client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).json()
    assert body["meta"] == {"total": 2, "per_page": 25, "next_cursor": None}
    first = body["data"][0]
    assert set(first) >= {"id", "name", "status", "masked_key", "scopes", "created_at", "expires_at",
                          "last_used_at", "last_used_ip", "revoked_at"}


def test_list_filters_by_status(client: TestClient, story: Story) -> None:
    doomed = client.post("/api/v1/api-keys", headers=bearer(story.admin_a),
                         json={"name": "old integration", "scopes": ["servers:read"]}).json()
    client.delete(f"/api/v1/api-keys/{doomed['id']}", headers=bearer(story.admin_a))
    revoked = client.get("/api/v1/api-keys?status=revoked", headers=bearer(story.admin_a)).json()
    assert [key["name"] for key in revoked["data"]] == ["old integration"]
    active = client.get("/api/v1/api-keys?status=active", headers=bearer(story.admin_a)).json()
    assert "old integration" not in [key["name"] for key in active["data"]]
    assert active["meta"]["total"] == 2
    bad = client.get("/api/v1/api-keys?status=sleeping", headers=bearer(story.admin_a))
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "status"


def test_rename(client: TestClient, story: Story) -> None:
    key_id = client.get("/api/v1/api-keys?q=teammate", headers=bearer(story.admin_a)).json()["data"][0]["id"]
    response = client.patch(f"/api/v1/api-keys/{key_id}", headers=bearer(story.admin_a), json={"name": "Bot"})
    assert response.status_code == 200 and response.json()["name"] == "Bot"


def test_renaming_goes_through_the_service_and_stays_in_the_team(db: Database, story: Story) -> None:
    with db.session(write=True) as session:
        [key] = session.scalars(service.listing(story.team_a, status=None, q="teammate", now=utcnow())).all()
        with pytest.raises(NotFound):
            service.rename_key(session, team_id=story.team_b, key_id=key.id, name="stolen")
        assert service.rename_key(session, team_id=story.team_a, key_id=key.id, name="Bot").name == "Bot"
    with db.session(write=False) as session:
        assert [k.name for k in session.scalars(service.listing(story.team_a, status=None, q="bot",
                                                                now=utcnow()))] == ["Bot"]


def test_other_teams_keys_are_invisible(client: TestClient, story: Story) -> None:
    a_ids = [key["id"] for key in client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).json()["data"]]
    b_list = client.get("/api/v1/api-keys", headers=bearer(story.admin_b)).json()
    assert b_list["meta"]["total"] == 1
    assert not set(a_ids) & {key["id"] for key in b_list["data"]}
    for key_id in a_ids:
        for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/rotate")):
            response = client.request(method, f"/api/v1/api-keys/{key_id}{suffix}", headers=bearer(story.admin_b),
                                      json={"name": "x"} if method == "PATCH" else None)
            assert response.status_code == 404, (method, suffix)
            assert response.json()["error"]["code"] == "api_key_not_found"
    # Nothing B tried touched A's keys.
    assert all(key["status"] == "active" and key["name"] != "x"
               for key in client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).json()["data"])


def _every_stored_value(db: Database) -> str:
    """Every row of every table, as text, straight from the database."""
    dump = []
    with db.engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                dump.append(repr(tuple(row)))
    return "\n".join(dump)


def test_no_raw_key_is_stored_anywhere(client: TestClient, story: Story, db: Database) -> None:
    created = client.post("/api/v1/api-keys", headers=bearer(story.admin_a),
                          json={"name": "scan me", "scopes": ["servers:read"]}).json()["key"]
    key_id = client.get("/api/v1/api-keys?q=scan", headers=bearer(story.admin_a)).json()["data"][0]["id"]
    rotated = client.post(f"/api/v1/api-keys/{key_id}/rotate", headers=bearer(story.admin_a)).json()["key"]
    secrets = [story.admin_a, story.reader_a, story.admin_b, created, rotated]
    runtime.of(client.app).part(KeyUsageTracker).flush(db)

    stored = _every_stored_value(db)
    assert "sk_live_" not in stored.replace("'sk_live_'", "")  # only the bare prefix column may say it
    for secret in secrets:
        assert secret[8:] not in stored
        assert secret[8:20] not in stored
    if db.is_sqlite:
        # Also the bytes on disk, write-ahead log included.
        path = Path(db.engine.url.database or "")
        for candidate in (path, path.with_name(path.name + "-wal")):
            if candidate.exists():
                raw_bytes = _read_elsewhere(candidate)
                assert all(secret[8:].encode() not in raw_bytes for secret in secrets)


def _read_elsewhere(path: Path) -> bytes:
    """A file's bytes, read by another process. Opening and closing a SQLite file in this process would
    drop every POSIX lock SQLite holds on it here (locks belong to the process, and any close() releases
    them): another process then takes this one for gone, checkpoints and deletes the WAL this process is
    still writing to, and this process's later commits become invisible to every other."""
    reader = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"
    return subprocess.run([sys.executable, "-c", reader, str(path)], capture_output=True, check=True).stdout


def test_last_use_is_tracked_without_a_write_per_request(client: TestClient, story: Story, db: Database) -> None:
    updates: list[str] = []

    def count_updates(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            updates.append(statement)

    event.listen(db.engine, "before_cursor_execute", count_updates)
    try:
        for _ in range(20):
            assert client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).status_code == 200
        assert updates == []  # nothing written while serving
        runtime.of(client.app).part(KeyUsageTracker).flush(db)
        assert len(updates) == 1  # twenty uses, one write
        for _ in range(20):
            client.get("/api/v1/api-keys", headers=bearer(story.admin_a))
        runtime.of(client.app).part(KeyUsageTracker).flush(db)
        assert len(updates) == 1  # already fresh within the resolution: no write at all
    finally:
        event.remove(db.engine, "before_cursor_execute", count_updates)

    listed = client.get("/api/v1/api-keys?q=admin", headers=bearer(story.admin_a)).json()["data"][0]
    assert listed["last_used_at"] is not None
    assert listed["last_used_ip"] == "testclient"


def test_pages_cover_every_key_once(client: TestClient, story: Story) -> None:
    for index in range(11):
        client.post("/api/v1/api-keys", headers=bearer(story.admin_a),
                    json={"name": f"bulk {index % 3}", "scopes": ["servers:read"]})
    for sort in ("-id", "id", "name", "-name", "created_at", "-created_at"):
        seen: list[int] = []
        cursor = None
        while True:
            query = f"/api/v1/api-keys?per_page=4&sort={sort}" + (f"&cursor={cursor}" if cursor else "")
            page = client.get(query, headers=bearer(story.admin_a)).json()
            assert page["meta"]["total"] == 13
            seen += [key["id"] for key in page["data"]]
            cursor = page["meta"]["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 13 and len(set(seen)) == 13, sort
    names = [k["name"] for k in client.get("/api/v1/api-keys?sort=name&per_page=100",
                                            headers=bearer(story.admin_a)).json()["data"]]
    assert names == sorted(names)


def test_bad_list_parameters_are_field_errors(client: TestClient, story: Story) -> None:
    for query, field in (("per_page=0", "per_page"), ("per_page=101", "per_page"), ("sort=key_hash", "sort"),
                         ("cursor=garbage", "cursor")):
        response = client.get(f"/api/v1/api-keys?{query}", headers=bearer(story.admin_a))
        assert response.status_code == 422, query
        assert response.json()["error"]["fields"][0]["field"] == field
    other_sort = client.get("/api/v1/api-keys?per_page=1&sort=name", headers=bearer(story.admin_a)).json()
    mismatch = client.get(f"/api/v1/api-keys?sort=id&cursor={other_sort['meta']['next_cursor']}",
                          headers=bearer(story.admin_a))
    assert mismatch.status_code == 422
