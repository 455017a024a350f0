"""Agent config: the team's defaults and each server's overrides, as the REST API sets them and agents pull
them (``GET /api/v1/agent/config``, with an ETag)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hostatlas.agentconfig import service
from hostatlas.agentconfig.models import AgentConfigOverride
from hostatlas.agentconfig.schemas import AgentSettings
from hostatlas.db.engine import Database
from hostatlas.errors import NotFound
from tests.support import Story, bearer, enrol


def _overrides(db: Database) -> int:
    with db.session(write=False) as session:
        return session.scalar(select(func.count()).select_from(AgentConfigOverride)) or 0


def test_agent_config_layers_and_etag(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    first = client.get("/api/v1/agent/config", headers=bearer(token))
    assert first.status_code == 200
    body = first.json()
    assert (body["metrics_interval"], body["checkin_interval"], body["log_paths"]) == (15, 60, [])
    etag = first.headers["ETag"]
    assert body["version"] in etag
    unchanged = client.get("/api/v1/agent/config", headers={**bearer(token), "If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.headers["ETag"] == etag

    team = client.put("/api/v1/agent-config", headers=bearer(story.admin_a),
                      json={"metrics_interval": 30, "log_paths": ["/var/log/syslog"],
                            "features": {"containers": False}})
    assert team.status_code == 200 and team.json()["effective"]["metrics_interval"] == 30
    server = client.put(f"/api/v1/servers/{server_id}/agent-config", headers=bearer(story.admin_a),
                        json={"metrics_interval": 10})
    assert server.json()["overrides"] == {"metrics_interval": 10}

    changed = client.get("/api/v1/agent/config", headers={**bearer(token), "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    effective = changed.json()
    assert effective["metrics_interval"] == 10 and effective["log_paths"] == ["/var/log/syslog"]
    assert effective["features"]["containers"] is False and effective["features"]["logs"] is True

    bad = client.put("/api/v1/agent-config", headers=bearer(story.admin_a),
                     json={"metrics_interval": 1, "log_paths": ["relative/path"], "features": {"teleport": True}})
    assert bad.status_code == 422
    assert {f["field"] for f in bad.json()["error"]["fields"]} == {"metrics_interval", "log_paths[0]", "features"}
    unknown_feature = client.put("/api/v1/agent-config", headers=bearer(story.admin_a), json={"features": {"x": True}})
    assert unknown_feature.status_code == 422 and unknown_feature.json()["error"]["fields"][0]["field"] == "features"


def test_a_put_replaces_what_was_set_and_unset_fields_inherit(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    path = f"/api/v1/servers/{server_id}/agent-config"
    client.put("/api/v1/agent-config", headers=bearer(story.admin_a), json={"checkin_interval": 120})
    client.put(path, headers=bearer(story.admin_a), json={"metrics_interval": 10, "features": {"logs": False}})
    replaced = client.put(path, headers=bearer(story.admin_a), json={"log_paths": ["/var/log/app/*.log"]}).json()
    assert replaced["overrides"] == {"log_paths": ["/var/log/app/*.log"]}
    effective = replaced["effective"]
    assert (effective["metrics_interval"], effective["checkin_interval"]) == (15, 120)
    assert effective["features"]["logs"] is True
    assert client.get(path, headers=bearer(story.admin_a)).json() == replaced
    pulled = client.get("/api/v1/agent/config", headers=bearer(token)).json()
    assert pulled == effective

    cleared = client.put(path, headers=bearer(story.admin_a), json={}).json()
    assert cleared["overrides"] == {}
    team = client.get("/api/v1/agent-config", headers=bearer(story.admin_a)).json()
    assert cleared["effective"] == team["effective"] and team["overrides"] == {"checkin_interval": 120}


def test_the_team_defaults_of_one_team_never_reach_another(client: TestClient, story: Story) -> None:
    _, token_a = enrol(client, story.admin_a)
    _, token_b = enrol(client, story.admin_b, machine_id="b-1")
    client.put("/api/v1/agent-config", headers=bearer(story.admin_b), json={"metrics_interval": 600})
    assert client.get("/api/v1/agent/config", headers=bearer(token_a)).json()["metrics_interval"] == 15
    assert client.get("/api/v1/agent/config", headers=bearer(token_b)).json()["metrics_interval"] == 600
    assert client.get("/api/v1/agent-config", headers=bearer(story.admin_a)).json()["overrides"] == {}


def test_team_b_cannot_read_or_set_team_a_server_config(client: TestClient, story: Story, db: Database) -> None:
    server_id, _ = enrol(client, story.admin_a)
    path = f"/api/v1/servers/{server_id}/agent-config"
    for method in ("GET", "PUT"):
        response = client.request(method, path, headers=bearer(story.admin_b),
                                  json={"metrics_interval": 30} if method == "PUT" else None)
        assert response.status_code == 404 and response.json()["error"]["code"] == "server_not_found", method
    assert _overrides(db) == 0
    assert client.get(path, headers=bearer(story.admin_a)).json()["overrides"] == {}


def test_bad_settings_are_field_errors_and_store_nothing(client: TestClient, story: Story, db: Database) -> None:
    server_id, _ = enrol(client, story.admin_a)
    for path in ("/api/v1/agent-config", f"/api/v1/servers/{server_id}/agent-config"):
        for body, field in (({"metrics_interval": 4}, "metrics_interval"), ({"checkin_interval": 3601},
                                                                            "checkin_interval"),
                            ({"log_paths": [""]}, "log_paths[0]"), ({"features": {"logs": 1}}, "features.logs"),
                            ({"verbose": True}, "verbose")):
            response = client.put(path, headers=bearer(story.admin_a), json=body)
            assert response.status_code == 422, (path, body)
            error = response.json()["error"]
            assert error["code"] == "validation_failed" and error["fields"][0]["field"] == field, (path, error)
        not_json = client.put(path, headers=bearer(story.admin_a), json=[{"metrics_interval": 30}])
        assert not_json.status_code == 422, path
    assert client.put("/api/v1/servers/0/agent-config", headers=bearer(story.admin_a), json={}).status_code == 422
    assert _overrides(db) == 0


def test_the_service_checks_the_server_before_storing(client: TestClient, story: Story, db: Database) -> None:
    """The rule lives in the service, so any path that sets a config (API, dashboard) is held to it."""
    server_id, _ = enrol(client, story.admin_a)
    settings = AgentSettings(metrics_interval=30)
    with db.session(write=True) as session:
        with pytest.raises(NotFound):
            service.replace(session, story.team_b, server_id, settings)
        with pytest.raises(NotFound):
            service.config_of(session, story.team_b, server_id)
        stored = service.replace(session, story.team_a, server_id, settings)
    assert stored.overrides == {"metrics_interval": 30} and stored.effective.metrics_interval == 30
    assert _overrides(db) == 1
    with db.session(write=False) as session:
        assert service.config_of(session, story.team_a, None).effective.metrics_interval == 15
        assert service.config_of(session, story.team_a, server_id) == stored


def test_layers_merge_in_order_without_touching_the_defaults() -> None:
    merged = service.merge({"metrics_interval": 30, "features": {"logs": False}},
                           {"metrics_interval": 10, "features": {"containers": False}})
    assert merged["metrics_interval"] == 10 and merged["checkin_interval"] == 60
    assert merged["features"]["logs"] is False and merged["features"]["containers"] is False
    assert service.BUILT_IN["features"]["logs"] is True  # merging never edits the defaults
