"""An agent's life over HTTP: enrolment, check-ins, discovery, and the seed's server detail."""

from __future__ import annotations

import copy

from fastapi.testclient import TestClient
from sqlalchemy import event

from hostatlas.db.engine import Database
from hostatlas.http import runtime
from hostatlas.servers.checkins import CheckinBuffer
from tests.support import SEED_SNAPSHOT, Story, bearer, enrol, host_facts


def test_agent_lifecycle_ends_in_the_seeds_server_detail(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    assert token.startswith("agt_")
    checkin = client.post("/api/v1/agent/check-in", headers=bearer(token),
                          json={"agent_version": "1.4.2", "uptime_s": 123, "boot_id": "b-1"})
    assert checkin.status_code == 200 and checkin.json()["server_id"] == server_id

    first = client.post("/api/v1/agent/discovery", headers=bearer(token), json=SEED_SNAPSHOT)
    assert first.status_code == 200, first.text
    assert first.json()["summary"] == {"added": 7, "changed": 0, "removed": 0}

    detail = client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).json()
    assert {key: detail[key] for key in ("id", "hostname", "ip_address", "os", "kernel", "cpu_cores", "ram_total_mb",
                                         "status", "agent_version")} == {
        "id": server_id, "hostname": "web-prod-01", "ip_address": "10.0.1.12", "os": "Ubuntu 22.04.3 LTS",
        "kernel": "6.2.0-39-generic", "cpu_cores": 4, "ram_total_mb": 8192, "status": "online",
        "agent_version": "1.4.2"}
    assert detail["last_seen_at"].endswith("Z")
    assert [{k: s[k] for k in ("name", "version", "status")} for s in detail["services"]] == [
        {"name": "nginx", "version": "1.24.0", "status": "running"},
        {"name": "postgresql", "version": "15.4", "status": "running"},
        {"name": "redis", "version": "7.2.3", "status": "running"}]
    assert sorted((d["name"], d["ssl_expiry"]) for d in detail["domains"]) == [
        ("api.example.com", "2026-08-14"), ("app.example.com", "2026-08-14")]
    assert detail["containers"][0]["image"] == "acme/worker:2.1"
    assert detail["certificates"][0]["not_after"] == "2026-08-14T12:00:00Z"

    second_snapshot = copy.deepcopy(SEED_SNAPSHOT)
    second_snapshot["services"] = [dict(SEED_SNAPSHOT["services"][0], version="1.25.3"), SEED_SNAPSHOT["services"][1]]
    second = client.post("/api/v1/agent/discovery", headers=bearer(token), json=second_snapshot).json()
    assert second["summary"] == {"added": 0, "changed": 1, "removed": 1}
    assert second["services"] == {"added": [], "changed": ["nginx"], "removed": ["redis"]}

    changes = client.get(f"/api/v1/servers/{server_id}/changes?kind=service&action=changed",
                         headers=bearer(story.admin_a)).json()
    assert changes["meta"]["total"] == 1
    change = changes["data"][0]
    assert change["key"] == "nginx"
    assert change["before"]["version"] == "1.24.0" and change["after"]["version"] == "1.25.3"
    removed = client.get(f"/api/v1/servers/{server_id}/changes?action=removed", headers=bearer(story.admin_a)).json()
    assert [c["key"] for c in removed["data"]] == ["redis"]

    listed = client.get("/api/v1/servers", headers=bearer(story.admin_a)).json()["data"][0]
    assert listed["services_count"] == 2 and listed["domains_count"] == 2


def test_same_machine_is_the_same_server_with_a_fresh_token(client: TestClient, story: Story) -> None:
    first_id, old_token = enrol(client, story.admin_a)
    again = client.post("/api/v1/agent/register", headers=bearer(story.admin_a),
                        json=dict(host_facts(), hostname="web-prod-01-renamed"))
    assert again.status_code == 201
    assert again.json()["server_id"] == first_id and again.json()["created"] is False
    refused = client.post("/api/v1/agent/check-in", headers=bearer(old_token), json={})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "agent_token_revoked"
    fresh = again.json()["agent_token"]
    assert client.post("/api/v1/agent/check-in", headers=bearer(fresh), json={}).status_code == 200
    assert client.get("/api/v1/servers", headers=bearer(story.admin_a)).json()["meta"]["total"] == 1


def test_tokens_and_keys_stay_in_their_lanes(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    on_rest = client.get("/api/v1/servers", headers=bearer(token))
    assert on_rest.status_code == 401 and on_rest.json()["error"]["code"] == "wrong_token_type"
    on_agent = client.post("/api/v1/agent/check-in", headers=bearer(story.admin_a), json={})
    assert on_agent.status_code == 401 and on_agent.json()["error"]["code"] == "wrong_token_type"
    no_scope = client.post("/api/v1/agent/register", headers=bearer(story.reader_a), json=host_facts())
    assert no_scope.status_code == 403 and "agent:register" in no_scope.json()["error"]["message"]
    enroller = story.key(story.team_a, ["agent:register"])
    assert enrol(client, enroller, machine_id="other")[0] != server_id
    assert client.get("/api/v1/servers", headers=bearer(enroller)).status_code == 403
    assert client.post("/api/v1/agent/check-in", json={}).json()["error"]["code"] == "missing_agent_token"


def test_a_deleted_servers_token_is_rejected(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    client.post("/api/v1/agent/discovery", headers=bearer(token), json=SEED_SNAPSHOT)
    assert client.delete(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).status_code == 204
    for method, path in (("POST", "check-in"), ("POST", "discovery"), ("GET", "config")):
        response = client.request(method, f"/api/v1/agent/{path}", headers=bearer(token),
                                  json={} if method == "POST" else None)
        assert response.status_code == 401, path
    assert client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).status_code == 404
    assert client.get("/api/v1/services", headers=bearer(story.admin_a)).json()["meta"]["total"] == 0


def test_free_plan_enrols_three_servers(client: TestClient, story: Story) -> None:
    for index in range(3):
        enrol(client, story.admin_b, machine_id=f"b-{index}")
    fourth = client.post("/api/v1/agent/register", headers=bearer(story.admin_b), json=host_facts(machine_id="b-3"))
    assert fourth.status_code == 403 and fourth.json()["error"]["code"] == "plan_limit_reached"
    # A known machine re-enrols; the pro team (A) is not capped.
    assert client.post("/api/v1/agent/register", headers=bearer(story.admin_b),
                       json=host_facts(machine_id="b-0")).status_code == 201
    for index in range(5):
        enrol(client, story.admin_a, machine_id=f"a-{index}")


def test_checkins_are_coalesced_into_one_write(client: TestClient, story: Story, db: Database) -> None:
    server_id, token = enrol(client, story.admin_a)
    statements: list[str] = []

    def spy(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "servers" in statement and statement.lstrip().upper().startswith("UPDATE"):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", spy)
    try:
        for uptime in range(50):
            assert client.post("/api/v1/agent/check-in", headers=bearer(token),
                               json={"uptime_s": uptime, "agent_version": "1.4.3"}).status_code == 200
        assert statements == []
        runtime.of(client.app).part(CheckinBuffer).flush(db)
        assert len(statements) == 1
    finally:
        event.remove(db.engine, "before_cursor_execute", spy)
    detail = client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).json()
    assert detail["uptime_s"] == 49 and detail["agent_version"] == "1.4.3"
