"""A key grants only scopes it holds, whichever path issues the key (create, rotate, any later one)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from hostatlas.apikeys import service
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.errors import PermissionDenied
from tests.support import Story, assert_envelope, bearer


def _key_id(client: TestClient, story: Story, name: str) -> int:
    keys = client.get("/api/v1/api-keys", headers=bearer(story.admin_a), params={"per_page": 100}).json()["data"]
    [key] = [key for key in keys if key["name"] == name]
    return int(key["id"])


def _key_count(client: TestClient, story: Story) -> int:
    return int(client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).json()["meta"]["total"])


def test_rotating_a_key_broader_than_the_caller_is_403_and_issues_nothing(client: TestClient, story: Story) -> None:
    manager = story.key(story.team_a, ["api_keys:write"], name="key manager")
    admin_id = _key_id(client, story, "admin A")
    before = _key_count(client, story)

    answer = client.post(f"/api/v1/api-keys/{admin_id}/rotate", headers=bearer(manager), json={"grace_seconds": 0})

    error = assert_envelope(answer, 403, "scope_not_held")
    assert "*" in str(error["message"])
    assert "key" not in answer.json()
    assert _key_count(client, story) == before
    admin = client.get(f"/api/v1/api-keys/{admin_id}", headers=bearer(story.admin_a)).json()
    assert admin["status"] == "active" and admin["rotated_at"] is None


def test_rotating_a_key_within_the_callers_scopes_still_works(client: TestClient, story: Story) -> None:
    manager = story.key(story.team_a, ["api_keys:write", "servers:write"], name="key manager")
    # servers:write carries servers:read, so the teammate's servers:read key may be rotated by it.
    reader_id = _key_id(client, story, "teammate A")
    answer = client.post(f"/api/v1/api-keys/{reader_id}/rotate", headers=bearer(manager), json={})
    assert answer.status_code == 201, answer.text
    assert answer.json()["scopes"] == ["servers:read"]
    assert client.get("/api/v1/servers", headers=bearer(answer.json()["key"])).status_code == 200


def test_creating_a_key_broader_than_the_caller_is_still_403(client: TestClient, story: Story) -> None:
    manager = story.key(story.team_a, ["api_keys:write"], name="key manager")
    before = _key_count(client, story)
    answer = client.post("/api/v1/api-keys", headers=bearer(manager), json={"name": "x", "scopes": ["*"]})
    assert_envelope(answer, 403, "scope_not_held")
    assert _key_count(client, story) == before


def test_the_key_service_enforces_the_rule_for_create_and_rotate(db: Database, story: Story) -> None:
    held = ("api_keys:write",)
    with db.session(write=True) as session:
        with pytest.raises(PermissionDenied) as refused:
            service.create_key(session, team_id=story.team_a, name="x", scopes=["servers:read"], expires_at=None,
                               now=utcnow(), granted_by=held)
        assert refused.value.code == "scope_not_held"
        admin = service.create_key(session, team_id=story.team_a, name="admin", scopes=["*"], expires_at=None,
                                   now=utcnow(), granted_by=("*",)).record
        with pytest.raises(PermissionDenied):
            service.rotate_key(session, team_id=story.team_a, key_id=admin.id, grace=timedelta(0),
                               default_grace=timedelta(days=1), now=utcnow(), granted_by=held)
        assert admin.rotated_at is None
