"""Test helpers: a story of two teams, key makers, and a real ``hostatlas serve`` on loopback."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from hostatlas.apikeys import service as api_keys
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.teams import service as teams
from hostatlas.teams.models import DEFAULT_TEAM_SLUG, Plan

# The clusters deploy/clickhouse/config.d/hostatlas-cluster.xml defines over the two test servers
# (scripts/clickhouse-cluster): two shards of one replica each, and one shard of two replicas.
CLICKHOUSE_CLUSTER = "hostatlas"
CLICKHOUSE_MIRROR_CLUSTER = "hostatlas_mirror"


@dataclass
class Story:
    """Team A (the default team, with an admin key and a teammate's narrower key) and outsider team B."""

    db: Database
    team_a: int
    team_b: int
    admin_a: str
    reader_a: str
    admin_b: str

    def key(self, team_id: int, scopes: list[str], *, name: str = "test",
            expires_at: datetime | None = None) -> str:
        return issue_key(self.db, team_id, scopes, name=name, expires_at=expires_at)


def issue_key(db: Database, team_id: int, scopes: list[str], *, name: str = "test",
              expires_at: datetime | None = None) -> str:
    with db.session(write=True) as session:
        return api_keys.create_key(session, team_id=team_id, name=name, scopes=scopes,
                                   expires_at=expires_at, now=utcnow(), granted_by=["*"]).raw


def pro_team_key(db: Database, slug: str) -> str:
    """A team of the test's own (on the uncapped plan) and a key with every scope."""
    with db.session(write=True) as session:
        team_id = teams.create_team(session, slug, plan=Plan.PRO).id
    return issue_key(db, team_id, ["*"], name=slug)


def make_story(db: Database) -> Story:
    with db.session(write=True) as session:
        team_a = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG).id
        team_b = teams.create_team(session, "outsiders", plan=Plan.FREE).id
    return Story(
        db=db, team_a=team_a, team_b=team_b,
        admin_a=issue_key(db, team_a, ["*"], name="admin A"),
        reader_a=issue_key(db, team_a, ["servers:read"], name="teammate A"),
        admin_b=issue_key(db, team_b, ["*"], name="admin B"),
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    """The response is an error in the one envelope, with the request id and rate-limit headers."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["X-Request-Id"]
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert header in response.headers, header
    return dict(error)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hostatlas_command() -> list[str]:
    return [sys.executable, "-m", "hostatlas"]


@contextmanager
def running_server(workdir: Path, env: dict[str, str], *, extra_args: tuple[str, ...] = (),
                   port: int | None = None) -> Iterator[str]:
    """``hostatlas serve`` as a real process on a loopback port (a free one unless given); yields its base URL."""
    port = port or free_port()
    full_env = {**os.environ, **env}
    log = open(workdir / f"serve-{port}.log", "w")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen([*hostatlas_command(), "serve", "--port", str(port), *extra_args],
                               cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # a loaded machine (xdist, CI) can take a while to import and start
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {(workdir / f'serve-{port}.log').read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def host_facts(machine_id: str = "machine-web-prod-01", hostname: str = "web-prod-01") -> dict[str, object]:
    return {"machine_id": machine_id, "hostname": hostname, "ip_address": "10.0.1.12", "os": "Ubuntu 22.04.3 LTS",
            "kernel": "6.2.0-39-generic", "cpu_cores": 4, "ram_total_mb": 8192, "agent_version": "1.4.2"}


def enrol(client: httpx.Client | Any, key: str, **facts: str) -> tuple[int, str]:
    """Register an agent like the real one does; returns (server_id, agent token)."""
    response = client.post("/api/v1/agent/register", headers=bearer(key), json=host_facts(**facts))
    assert response.status_code == 201, response.text
    body = response.json()
    return int(body["server_id"]), str(body["agent_token"])


SEED_SNAPSHOT: dict[str, list[dict[str, object]]] = {
    "services": [
        {"name": "nginx", "version": "1.24.0", "status": "running", "unit": "nginx.service", "pid": 812,
         "ports": [80, 443], "log_paths": ["/var/log/nginx/error.log"]},
        {"name": "postgresql", "version": "15.4", "status": "running", "unit": "postgresql.service", "pid": 901,
         "ports": [5432], "log_paths": []},
        {"name": "redis", "version": "7.2.3", "status": "running", "unit": "redis.service", "pid": 955,
         "ports": [6379], "log_paths": []},
    ],
    "domains": [
        {"name": "app.example.com", "source": "nginx", "ssl_expiry": "2026-08-14"},
        {"name": "api.example.com", "source": "nginx", "ssl_expiry": "2026-08-14"},
    ],
    "containers": [{"id": "3f2a9c1b7d4e", "name": "worker", "image": "acme/worker:2.1", "status": "running"}],
    "certificates": [{"path": "/etc/letsencrypt/live/app.example.com/fullchain.pem", "subject": "CN=app.example.com",
                      "issuer": "CN=R3, O=Let's Encrypt", "domains": ["app.example.com", "api.example.com"],
                      "not_after": "2026-08-14T12:00:00Z"}],
}


def get_ok(client: httpx.Client | Any, key: str, path: str, **params: Any) -> dict[str, Any]:
    """GET ``path`` with the API key ``key``; the JSON body of what must be a 200 answer."""
    response = client.get(path, headers=bearer(key), params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def enrol_fleet(client: httpx.Client | Any, story: Story) -> dict[str, tuple[int, str]]:
    """Team A's three servers by hostname, (server_id, agent token): web-prod-01 discovered the seed's
    snapshot, db-staging-01 a stopped postgresql and a domain expiring in five days, web-prod-02 nothing."""
    fleet = {name: enrol(client, story.admin_a, machine_id=f"m-{name}", hostname=name)
             for name in ("web-prod-01", "web-prod-02", "db-staging-01")}
    client.post("/api/v1/agent/discovery", headers=bearer(fleet["web-prod-01"][1]), json=SEED_SNAPSHOT)
    soon = copy.deepcopy(SEED_SNAPSHOT)
    soon["domains"] = [{"name": "staging.example.com", "ssl_expiry": (utcnow() + timedelta(days=5)).date().isoformat()}]
    soon["services"] = [{"name": "postgresql", "version": "16.1", "status": "stopped"}]
    client.post("/api/v1/agent/discovery", headers=bearer(fleet["db-staging-01"][1]), json=soon)
    return fleet


def wait_until(predicate: Callable[[], object], *, timeout: float = 10.0, interval: float = 0.02,
               what: str = "the condition") -> None:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
