"""The servers, inventory and events resources: filters, editing, and team isolation."""

from __future__ import annotations

import copy
from datetime import timedelta

from fastapi.testclient import TestClient

from hostatlas.clock import utcnow
from tests.support import SEED_SNAPSHOT, Story, bearer, enrol


def _fleet(client: TestClient, story: Story) -> dict[str, tuple[int, str]]:
    fleet = {name: enrol(client, story.admin_a, machine_id=f"m-{name}", hostname=name)
             for name in ("web-prod-01", "web-prod-02", "db-staging-01")}
    client.post("/api/v1/agent/discovery", headers=bearer(fleet["web-prod-01"][1]), json=SEED_SNAPSHOT)
    soon = copy.deepcopy(SEED_SNAPSHOT)
    soon["domains"] = [{"name": "staging.example.com", "ssl_expiry": (utcnow() + timedelta(days=5)).date().isoformat()}]
    soon["services"] = [{"name": "postgresql", "version": "16.1", "status": "stopped"}]
    client.post("/api/v1/agent/discovery", headers=bearer(fleet["db-staging-01"][1]), json=soon)
    return fleet


def test_list_filters_and_sorts_servers(client: TestClient, story: Story) -> None:
    fleet = _fleet(client, story)
    web1 = fleet["web-prod-01"][0]
    tagged = client.patch(f"/api/v1/servers/{web1}", headers=bearer(story.admin_a),
                          json={"tags": ["prod", "web", "prod"], "display_name": "Frontend 1"})
    assert tagged.status_code == 200 and tagged.json()["tags"] == ["prod", "web"]
    client.patch(f"/api/v1/servers/{fleet['web-prod-02'][0]}", headers=bearer(story.admin_a), json={"tags": ["prod"]})

    def names(query: str) -> list[str]:
        body = client.get(f"/api/v1/servers?{query}", headers=bearer(story.admin_a)).json()
        return [server["hostname"] for server in body["data"]]

    assert names("tag=prod&sort=hostname") == ["web-prod-01", "web-prod-02"]
    assert names("tag=web") == ["web-prod-01"]
    assert names("q=staging") == ["db-staging-01"]
    assert names("q=frontend") == ["web-prod-01"]
    assert names("sort=-hostname") == ["web-prod-02", "web-prod-01", "db-staging-01"]
    assert names("status=offline") == []
    first = client.get("/api/v1/servers?sort=hostname", headers=bearer(story.admin_a)).json()["data"][1]
    assert set(first) >= {"id", "hostname", "ip_address", "os", "status", "last_seen_at", "services_count",
                          "domains_count", "tags"}
    assert (first["services_count"], first["domains_count"]) == (3, 2)
    bad = client.patch(f"/api/v1/servers/{web1}", headers=bearer(story.admin_a), json={"tags": ["no spaces"]})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "tags[0]"


def test_inventory_lists_across_servers(client: TestClient, story: Story) -> None:
    fleet = _fleet(client, story)
    services = client.get("/api/v1/services?name=postgresql", headers=bearer(story.admin_a)).json()
    assert services["meta"]["total"] == 2
    assert {s["server"]["hostname"] for s in services["data"]} == {"web-prod-01", "db-staging-01"}
    stopped = client.get("/api/v1/services?status=stopped", headers=bearer(story.admin_a)).json()["data"]
    assert [(s["name"], s["version"]) for s in stopped] == [("postgresql", "16.1")]
    expiring = client.get("/api/v1/domains?expiring_within_days=30", headers=bearer(story.admin_a)).json()["data"]
    # The seed's certificates ran out on 2026-08-14: already expired counts as expiring.
    assert sorted((d["name"], d["days_until_expiry"] > 0) for d in expiring) == [
        ("api.example.com", False), ("app.example.com", False), ("staging.example.com", True)]
    assert [d["days_until_expiry"] for d in expiring if d["name"] == "staging.example.com"] == [5]
    on_server = client.get(f"/api/v1/domains?server_id={fleet['web-prod-01'][0]}", headers=bearer(story.admin_a))
    assert on_server.json()["meta"]["total"] == 2
    containers = client.get("/api/v1/containers?status=running", headers=bearer(story.admin_a)).json()
    assert containers["meta"]["total"] == 2
    certificates = client.get("/api/v1/certificates?q=app.example.com", headers=bearer(story.admin_a)).json()
    assert certificates["meta"]["total"] == 2 and certificates["data"][0]["domains"] == ["app.example.com",
                                                                                         "api.example.com"]


def test_events_feed_filters_and_catches_up(client: TestClient, story: Story) -> None:
    fleet = _fleet(client, story)
    feed = client.get("/api/v1/events?sort=id&per_page=2", headers=bearer(story.admin_a)).json()
    assert feed["meta"]["total"] == 5  # three registrations, two discoveries
    assert [e["type"] for e in feed["data"]] == ["server.registered", "server.registered"]
    after = feed["data"][-1]["id"]
    rest = client.get(f"/api/v1/events?sort=id&after_id={after}", headers=bearer(story.admin_a)).json()["data"]
    assert [e["type"] for e in rest] == ["server.registered", "inventory.changed", "inventory.changed"]
    typed = client.get("/api/v1/events?type=inventory.changed", headers=bearer(story.admin_a)).json()
    assert typed["meta"]["total"] == 2
    on_server = client.get(f"/api/v1/events?server_id={fleet['web-prod-02'][0]}", headers=bearer(story.admin_a))
    assert on_server.json()["meta"]["total"] == 1
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert client.get("/api/v1/events", headers=bearer(story.admin_a),
                      params={"since": future}).json()["meta"]["total"] == 0


def test_team_b_sees_nothing_of_team_a(client: TestClient, story: Story) -> None:
    fleet = _fleet(client, story)
    server_id = fleet["web-prod-01"][0]
    for collection in ("servers", "services", "domains", "containers", "certificates", "events"):
        body = client.get(f"/api/v1/{collection}", headers=bearer(story.admin_b)).json()
        assert body["meta"]["total"] == 0 and body["data"] == [], collection
    for method, path in (("GET", f"/api/v1/servers/{server_id}"), ("PATCH", f"/api/v1/servers/{server_id}"),
                         ("DELETE", f"/api/v1/servers/{server_id}"), ("GET", f"/api/v1/servers/{server_id}/changes"),
                         ("GET", f"/api/v1/servers/{server_id}/agent-config"),
                         ("PUT", f"/api/v1/servers/{server_id}/agent-config")):
        response = client.request(method, path, headers=bearer(story.admin_b),
                                  json={} if method in ("PATCH", "PUT") else None)
        assert response.status_code == 404, (method, path)
    filtered = client.get(f"/api/v1/services?server_id={server_id}", headers=bearer(story.admin_b)).json()
    assert filtered["meta"]["total"] == 0
    assert client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).status_code == 200


def test_read_scope_cannot_edit_servers(client: TestClient, story: Story) -> None:
    server_id, _ = enrol(client, story.admin_a)
    assert client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.reader_a)).status_code == 200
    response = client.delete(f"/api/v1/servers/{server_id}", headers=bearer(story.reader_a))
    assert response.status_code == 403 and "servers:write" in response.json()["error"]["message"]
