"""Rate-limit identity: made-up credentials are charged to the client IP, and proxy headers are believed
only from HOSTATLAS_TRUSTED_PROXIES."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import event

from hostatlas import tokens
from hostatlas.app import create_app
from hostatlas.db import migrate
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from tests.support import Story, bearer, enrol, make_story, running_server


@contextmanager
def counted_statements(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


@pytest.fixture
def limited(db: Database, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"rate_limit": "4/minute"}), db=db)
    with TestClient(app) as client:
        yield client


def _exhaust_ip(client: TestClient) -> None:
    statuses = [client.get("/api/v1/servers").status_code for _ in range(5)]
    assert statuses[-1] == 429, statuses


def test_made_up_keys_with_valid_checksums_share_the_exhausted_ip_budget(limited: TestClient, db: Database) -> None:
    _exhaust_ip(limited)
    with counted_statements(db) as statements:
        for _ in range(5):
            made_up_key = tokens.generate(tokens.API_KEY_PREFIX)
            assert limited.get("/api/v1/servers", headers=bearer(made_up_key)).status_code == 429
            made_up_token = tokens.generate(tokens.AGENT_TOKEN_PREFIX)
            answer = limited.post("/api/v1/agent/check-in", headers=bearer(made_up_token), json={"uptime_s": 1})
            assert answer.status_code == 429
            assert answer.headers["X-RateLimit-Remaining"] == "0"
    assert statements == []  # refused before any lookup


def test_keys_and_tokens_known_good_keep_their_own_budgets(limited: TestClient, story: Story) -> None:
    _, agent_token = enrol(limited, story.admin_a)  # the key's first use is charged to the IP
    _exhaust_ip(limited)
    answer = limited.get("/api/v1/servers", headers=bearer(story.admin_a))
    assert answer.status_code == 200
    assert answer.headers["X-RateLimit-Remaining"] == "3"
    checkin = limited.post("/api/v1/agent/check-in", headers=bearer(agent_token), json={"uptime_s": 1})
    assert checkin.status_code == 200


def test_a_revoked_key_is_charged_to_the_ip_again(limited: TestClient, story: Story) -> None:
    victim = story.key(story.team_a, ["servers:read"], name="soon revoked")
    assert limited.get("/api/v1/servers", headers=bearer(victim)).status_code == 200
    keys = limited.get("/api/v1/api-keys", headers=bearer(story.admin_a), params={"q": "soon"}).json()["data"]
    assert limited.delete(f"/api/v1/api-keys/{keys[0]['id']}", headers=bearer(story.admin_a)).status_code == 200
    assert limited.get("/api/v1/servers", headers=bearer(victim)).status_code == 401
    _exhaust_ip(limited)
    assert limited.get("/api/v1/servers", headers=bearer(victim)).status_code == 429


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    parsed = Settings(_env_file=None, trusted_proxies="10.0.0.1, 192.168.0.0/16")  # type: ignore[call-arg]
    assert parsed.trusted_proxies == "10.0.0.1,192.168.0.0/16"
    with pytest.raises(ValidationError):
        Settings(_env_file=None, trusted_proxies="10.0.0.1,proxy.internal")  # type: ignore[call-arg]


@contextmanager
def _served(tmp_path: Path, **env: str) -> Iterator[tuple[str, str]]:
    """A real ``hostatlas serve`` on loopback (SQLite) and an API key for it."""
    url = f"sqlite:///{tmp_path / 'hostatlas.db'}"
    db = Database(url)
    migrate.upgrade(db)
    key = make_story(db).admin_a
    db.dispose()
    full_env = {"HOSTATLAS_DATABASE_URL": url, "HOSTATLAS_RATE_LIMIT": "50/minute",
                "HOSTATLAS_FLUSH_INTERVAL": "0.1", **env}
    with running_server(tmp_path, full_env, extra_args=("--no-worker",)) as base:
        yield base, key


def _remaining_after_forwarded_requests(base: str) -> list[int]:
    remaining = []
    for client_ip in ("203.0.113.7", "198.51.100.23"):
        answer = httpx.get(f"{base}/api/v1/servers", headers={"X-Forwarded-For": client_ip})
        assert answer.status_code == 401
        remaining.append(int(answer.headers["X-RateLimit-Remaining"]))
    return remaining


def _last_used_ip(base: str, key: str, forwarded_for: str) -> str:
    headers = {**bearer(key), "X-Forwarded-For": forwarded_for}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        keys = httpx.get(f"{base}/api/v1/api-keys", headers=headers).json()["data"]
        [admin] = [key for key in keys if key["name"] == "admin A"]
        if admin["last_used_ip"]:
            return str(admin["last_used_ip"])
        time.sleep(0.05)
    raise AssertionError("the key's use was never recorded")


def test_x_forwarded_for_from_loopback_is_ignored_by_default(tmp_path: Path) -> None:
    with _served(tmp_path) as (base, key):
        # One identity (127.0.0.1) for both: the second request sees the first one's charge.
        assert _remaining_after_forwarded_requests(base) == [49, 48]
        assert _last_used_ip(base, key, "203.0.113.9") == "127.0.0.1"


def test_x_forwarded_for_is_believed_from_a_trusted_proxy(tmp_path: Path) -> None:
    with _served(tmp_path, HOSTATLAS_TRUSTED_PROXIES="127.0.0.0/8") as (base, key):
        assert _remaining_after_forwarded_requests(base) == [49, 49]
        assert _last_used_ip(base, key, "203.0.113.9") == "203.0.113.9"
