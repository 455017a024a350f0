"""Authentication and scopes: who gets in, and what each refusal says."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from fastapi.testclient import TestClient

from hostatlas.clock import utcnow
from tests.support import Story, bearer


def test_missing_key_is_rejected(client: TestClient, story: Story) -> None:
    response = client.get("/api/v1/api-keys")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_unknown_key_is_rejected(client: TestClient, story: Story) -> None:
    forged = story.admin_a[:-8] + "AAAAAAAA"
    response = client.get("/api/v1/api-keys", headers=bearer(forged))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_key_without_scope_cannot_create_keys(client: TestClient, story: Story) -> None:
    response = client.post("/api/v1/api-keys", headers=bearer(story.reader_a),
                           json={"name": "sneaky", "scopes": ["servers:read"]})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "missing_scope"
    assert "api_keys:write" in error["message"]


def test_write_scope_implies_read(client: TestClient, story: Story) -> None:
    writer = story.key(story.team_a, ["api_keys:write"])
    assert client.get("/api/v1/api-keys", headers=bearer(writer)).status_code == 200


def test_read_scope_does_not_imply_write(client: TestClient, story: Story) -> None:
    reader = story.key(story.team_a, ["api_keys:read"])
    assert client.get("/api/v1/api-keys", headers=bearer(reader)).status_code == 200
    response = client.post("/api/v1/api-keys", headers=bearer(reader), json={"name": "x", "scopes": ["*"]})
    assert response.status_code == 403


def test_key_cannot_grant_scopes_it_lacks(client: TestClient, story: Story) -> None:
    key_manager = story.key(story.team_a, ["api_keys:write"])
    response = client.post("/api/v1/api-keys", headers=bearer(key_manager),
                           json={"name": "escalate", "scopes": ["*"]})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "scope_not_held"


def test_expired_key_is_rejected_with_its_own_code(client: TestClient, story: Story) -> None:
    short_lived = story.key(story.team_a, ["*"], expires_at=utcnow() + timedelta(hours=1))
    assert client.get("/api/v1/api-keys", headers=bearer(short_lived)).status_code == 200
    with time_machine.travel(utcnow() + timedelta(hours=1, seconds=1)):
        response = client.get("/api/v1/api-keys", headers=bearer(short_lived))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_expired"


def test_revoked_key_fails_at_once(client: TestClient, story: Story) -> None:
    victim = story.key(story.team_a, ["*"], name="victim")
    victim_id = client.get("/api/v1/api-keys?q=victim", headers=bearer(story.admin_a)).json()["data"][0]["id"]
    assert client.get("/api/v1/api-keys", headers=bearer(victim)).status_code == 200

    revoked = client.delete(f"/api/v1/api-keys/{victim_id}", headers=bearer(story.admin_a))
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    assert revoked.json()["revoked_at"] is not None

    response = client.get("/api/v1/api-keys", headers=bearer(victim))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_revoked"
    # The record is kept, for the audit trail.
    kept = client.get(f"/api/v1/api-keys/{victim_id}", headers=bearer(story.admin_a)).json()
    assert kept["status"] == "revoked"


def test_401_tells_clients_how_to_authenticate(client: TestClient, story: Story) -> None:
    response = client.get("/api/v1/api-keys", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
