"""Zero-downtime rotation: both keys work during the grace, then only the successor."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import time_machine
from fastapi.testclient import TestClient

from hostatlas.apikeys import service
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.errors import NotFound
from tests.support import Story, bearer


def _key_id(client: TestClient, admin: str, name: str) -> int:
    return int(client.get(f"/api/v1/api-keys?q={name}", headers=bearer(admin)).json()["data"][0]["id"])


def test_both_keys_work_until_the_grace_ends(client: TestClient, story: Story) -> None:
    old_key = story.key(story.team_a, ["servers:read", "api_keys:read"], name="pipeline")
    old_id = _key_id(client, story.admin_a, "pipeline")
    start = utcnow()
    with time_machine.travel(start, tick=False) as clock:
        rotated = client.post(f"/api/v1/api-keys/{old_id}/rotate", headers=bearer(story.admin_a),
                              json={"grace_seconds": 3600})
        assert rotated.status_code == 201
        body = rotated.json()
        new_key = body["key"]
        assert new_key != old_key and new_key.startswith("sk_live_")
        assert body["scopes"] == ["api_keys:read", "servers:read"]
        assert body["rotated_from_id"] == old_id
        assert body["previous"]["status"] == "active"
        assert body["previous"]["rotated_at"] is not None

        clock.shift(timedelta(minutes=59))
        assert client.get("/api/v1/api-keys", headers=bearer(old_key)).status_code == 200
        assert client.get("/api/v1/api-keys", headers=bearer(new_key)).status_code == 200

        clock.shift(timedelta(minutes=1, seconds=1))
        after = client.get("/api/v1/api-keys", headers=bearer(old_key))
        assert after.status_code == 401
        assert after.json()["error"]["code"] == "api_key_expired"
        assert client.get("/api/v1/api-keys", headers=bearer(new_key)).status_code == 200


def test_default_grace_is_a_day(client: TestClient, story: Story) -> None:
    story.key(story.team_a, ["servers:read"], name="nightly")
    key_id = _key_id(client, story.admin_a, "nightly")
    before = utcnow()
    response = client.post(f"/api/v1/api-keys/{key_id}/rotate", headers=bearer(story.admin_a))
    assert response.status_code == 201
    previous = client.get(f"/api/v1/api-keys/{key_id}", headers=bearer(story.admin_a)).json()
    ends = datetime.fromisoformat(previous["expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=23, minutes=59) <= ends - before <= timedelta(hours=24, seconds=5)


def test_rotation_keeps_an_earlier_expiry(client: TestClient, story: Story) -> None:
    soon = utcnow() + timedelta(minutes=10)
    story.key(story.team_a, ["servers:read"], name="brief", expires_at=soon)
    key_id = _key_id(client, story.admin_a, "brief")
    body = client.post(f"/api/v1/api-keys/{key_id}/rotate", headers=bearer(story.admin_a),
                       json={"grace_seconds": 86400}).json()
    # The successor inherits the expiry, and the grace never extends the old key's life.
    assert body["expires_at"] == body["previous"]["expires_at"]


def test_revoked_or_rotated_keys_cannot_be_rotated(client: TestClient, story: Story) -> None:
    story.key(story.team_a, ["servers:read"], name="twice")
    key_id = _key_id(client, story.admin_a, "twice")
    assert client.post(f"/api/v1/api-keys/{key_id}/rotate", headers=bearer(story.admin_a)).status_code == 201
    again = client.post(f"/api/v1/api-keys/{key_id}/rotate", headers=bearer(story.admin_a))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "api_key_already_rotated"

    client.delete(f"/api/v1/api-keys/{key_id}", headers=bearer(story.admin_a))
    revoked = client.post(f"/api/v1/api-keys/{key_id}/rotate", headers=bearer(story.admin_a))
    assert revoked.status_code == 409
    assert revoked.json()["error"]["code"] == "api_key_not_active"


def test_grace_out_of_range_is_a_field_error(client: TestClient, story: Story) -> None:
    response = client.post(f"/api/v1/api-keys/{1}/rotate", headers=bearer(story.admin_a),
                           json={"grace_seconds": -5})
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "grace_seconds"


def test_the_service_applies_the_deployment_default_grace(db: Database, story: Story) -> None:
    """The default lives in the service, not the route, so every path that rotates keys gets it."""
    now = utcnow()
    with db.session(write=True) as session:
        key = service.create_key(session, team_id=story.team_a, name="ci", scopes=["servers:read"], expires_at=None,
                                 now=now, granted_by=["*"]).record
        rotation = service.rotate_key(session, team_id=story.team_a, key_id=key.id, grace=None,
                                      default_grace=timedelta(hours=2), now=now, granted_by=["*"])
        assert rotation.previous is key and key.expires_at == now + timedelta(hours=2) and key.rotated_at == now
        assert rotation.successor.record.rotated_from_id == key.id and rotation.successor.raw.startswith("sk_live_")
        with pytest.raises(NotFound):
            service.rotate_key(session, team_id=story.team_b, key_id=rotation.successor.record.id, grace=None,
                               default_grace=timedelta(hours=2), now=now, granted_by=["*"])
