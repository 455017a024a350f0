"""A body past the cap sent chunked (no Content-Length) is a 413 on every path, the agent fast path included."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from hostatlas.db import migrate
from hostatlas.db.engine import Database
from tests.support import assert_envelope, bearer, enrol, make_story, running_server

TWENTY_MIB = 20 * 1024 * 1024


def _chunks() -> Iterator[bytes]:
    """20 MiB that starts like JSON, streamed: httpx sends it with Transfer-Encoding: chunked."""
    yield b'{"series": [{"metric": "cpu.percent", "labels": {"pad": "'
    for _ in range(TWENTY_MIB // 65536):
        yield b"x" * 65536


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """A real ``hostatlas serve``; yields its URL, an admin key and an agent token."""
    workdir = tmp_path_factory.mktemp("chunked")
    url = f"sqlite:///{workdir / 'hostatlas.db'}"
    db = Database(url)
    migrate.upgrade(db)
    admin = make_story(db).admin_a
    db.dispose()
    with running_server(workdir, {"HOSTATLAS_DATABASE_URL": url}, extra_args=("--no-worker",)) as base, \
            httpx.Client(base_url=base) as client:
        _, token = enrol(client, admin)
        yield base, admin, token


@pytest.mark.parametrize("path", ["/api/v1/agent/metrics", "/api/v1/agent/logs", "/api/v1/agent/check-in"])
def test_a_chunked_20_mib_agent_body_is_413(served: tuple[str, str, str], path: str) -> None:
    base, _, token = served
    answer = httpx.post(f"{base}{path}", headers={**bearer(token), "Content-Type": "application/json"},
                        content=_chunks(), timeout=30)
    assert "content-length" not in answer.request.headers
    assert_envelope(answer, 413, "payload_too_large")


def test_a_chunked_20_mib_body_on_a_regular_route_is_413(served: tuple[str, str, str]) -> None:
    base, admin, _ = served
    answer = httpx.post(f"{base}/api/v1/api-keys", headers={**bearer(admin), "Content-Type": "application/json"},
                        content=_chunks(), timeout=30)
    assert_envelope(answer, 413, "payload_too_large")
    assert httpx.get(f"{base}/api/v1/api-keys", headers=bearer(admin)).json()["meta"]["total"] == 2  # nothing created
