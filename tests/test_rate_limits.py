"""Rate limits: headers on every response, 429 with Retry-After, budgets shared through Redis."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from hostatlas.app import create_app
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from tests.conftest import REDIS_URL, require_service
from tests.support import Story, bearer, issue_key, running_server


def test_budget_counts_down_then_429(db: Database, settings: Settings, story: Story) -> None:
    app = create_app(settings.model_copy(update={"rate_limit": "5/minute"}), db=db)
    with TestClient(app) as client:
        # A key's first request in a process is charged to its IP; from then on the key has its own budget.
        assert client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).status_code == 200
        remaining = []
        for _ in range(5):
            response = client.get("/api/v1/api-keys", headers=bearer(story.admin_a))
            assert response.status_code == 200
            assert response.headers["X-RateLimit-Limit"] == "5"
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        refused = client.get("/api/v1/api-keys", headers=bearer(story.admin_a))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert int(refused.headers["X-RateLimit-Reset"]) >= int(time.time())
        # Another key has its own budget.
        assert client.get("/api/v1/api-keys", headers=bearer(story.admin_b)).status_code == 200


def test_unauthenticated_requests_are_limited_per_ip(db: Database, settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"rate_limit": "3/minute"}), db=db)
    with TestClient(app) as client:
        statuses = [client.get("/api/v1/api-keys").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def _redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", _redis_available(), REDIS_URL)
    return REDIS_URL


def test_two_processes_share_one_budget_through_redis(db: Database, story: Story, redis_url: str, tmp_path: Path,
                                                       database_url: str) -> None:
    if db.is_sqlite:
        pytest.skip("one backend suffices for the two-process test; it runs on PostgreSQL")
    key = issue_key(db, story.team_a, ["api_keys:read"])
    env = {"HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_REDIS_URL": redis_url,
           "HOSTATLAS_RATE_LIMIT": "10/minute"}
    with running_server(tmp_path, env, extra_args=("--no-worker",)) as first, \
            running_server(tmp_path, env, extra_args=("--no-worker",)) as second:
        for base in (first, second):  # each process learns the key is good; these are charged to the IP
            assert httpx.get(f"{base}/api/v1/api-keys", headers=bearer(key)).status_code == 200
        statuses, remaining = [], []
        for index in range(11):
            base = first if index % 2 == 0 else second
            response = httpx.get(f"{base}/api/v1/api-keys", headers=bearer(key))
            statuses.append(response.status_code)
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert statuses == [200] * 10 + [429]
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]

