"""The command line and the served documentation, as a new user meets them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support import hostatlas_command, running_server

pytestmark = pytest.mark.long_running(40)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*hostatlas_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_serve_in_an_empty_directory_just_works(tmp_path: Path) -> None:
    """The README's first steps: serve on the embedded default, create a key, list keys with it."""
    with running_server(tmp_path, {"HOSTATLAS_DATABASE_URL": ""}) as base:
        created = _run(["apikey", "create", "--name", "admin", "--scopes", "*"], tmp_path)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"sk_live_[0-9A-Za-z]{38}", key)
        response = httpx.get(f"{base}/api/v1/api-keys", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.json()["data"][0]["name"] == "admin"
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-Request-Id"):
        assert header in response.headers, header
    assert (tmp_path / "hostatlas-data" / "hostatlas.db").exists()


def test_team_and_key_commands(tmp_path: Path) -> None:
    assert _run(["team", "create", "acme"], tmp_path).returncode == 0
    again = _run(["team", "create", "acme"], tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    made = _run(["apikey", "create", "--name", "ci", "--scopes", "servers:read,metrics:read", "--team", "acme",
                 "--expires", "2099-01-01"], tmp_path)
    assert made.returncode == 0, made.stderr
    assert "2099-01-01T00:00:00Z" in made.stdout
    bad_scope = _run(["apikey", "create", "--name", "x", "--scopes", "servers:admin"], tmp_path)
    assert bad_scope.returncode == 1 and "servers:admin" in bad_scope.stderr
    no_team = _run(["apikey", "create", "--name", "x", "--scopes", "*", "--team", "ghost"], tmp_path)
    assert no_team.returncode == 1 and "ghost" in no_team.stderr
    assert _run(["migrate"], tmp_path).stdout.startswith("database at head")


def test_openapi_documents_scopes_and_errors(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
                  if path.startswith("/api/v1/")]
    assert operations
    for path, method, operation in operations:
        requirements = operation.get("security", [])
        scopes = [scope for requirement in requirements for scope in requirement.get("ApiKey", [])]
        agent_only = requirements == [{"AgentToken": []}] and path.startswith("/api/v1/agent/")
        assert scopes or agent_only, f"{method} {path} names no scope"
        assert {"401", "403", "429"} <= set(operation["responses"]), f"{method} {path}"
        assert operation.get("summary"), f"{method} {path}"
    create = spec["paths"]["/api/v1/api-keys"]["post"]
    assert create["security"] == [{"ApiKey": ["api_keys:write"]}]
    assert "example" in create["responses"]["422"]["content"]["application/json"]


def test_explorer_works_offline(client: TestClient) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: ?'([^']+)'", page.text)
    assert assets
    for asset in assets:
        assert not asset.startswith(("http://", "https://", "//")), asset
        assert client.get(asset).status_code == 200, asset
