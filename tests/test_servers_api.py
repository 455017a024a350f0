"""The servers resource: filters, editing, removal, and team isolation."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hostatlas import tokens
from hostatlas.clock import utcnow
from hostatlas.errors import NotFound
from hostatlas.events.models import Event
from hostatlas.http import runtime
from hostatlas.servers import service
from hostatlas.servers.agent_auth import AgentAuthenticator
from hostatlas.servers.checkins import CheckinBuffer
from hostatlas.servers.models import AgentToken, Server
from hostatlas.servers.views import ServerViews
from tests.support import Story, bearer, enrol, enrol_fleet


def test_list_filters_and_sorts_servers(client: TestClient, story: Story) -> None:
    fleet = enrol_fleet(client, story)
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


def test_a_server_without_inventory_counts_zero(client: TestClient, story: Story) -> None:
    enrol(client, story.admin_a)
    [listed] = client.get("/api/v1/servers", headers=bearer(story.admin_a)).json()["data"]
    assert (listed["services_count"], listed["domains_count"]) == (0, 0)
    detail = client.get(f"/api/v1/servers/{listed['id']}", headers=bearer(story.admin_a)).json()
    assert (detail["services"], detail["domains"], detail["containers"], detail["certificates"]) == ([], [], [], [])


def test_editing_clears_a_name_and_keeps_what_is_not_sent(client: TestClient, story: Story) -> None:
    server_id, _ = enrol(client, story.admin_a)
    path = f"/api/v1/servers/{server_id}"
    client.patch(path, headers=bearer(story.admin_a), json={"display_name": "Frontend", "tags": ["prod"]})
    renamed = client.patch(path, headers=bearer(story.admin_a), json={"display_name": ""}).json()
    assert renamed["display_name"] is None and renamed["tags"] == ["prod"]
    untagged = client.patch(path, headers=bearer(story.admin_a), json={"tags": []}).json()
    assert untagged["tags"] == []
    assert client.get("/api/v1/servers?tag=prod", headers=bearer(story.admin_a)).json()["meta"]["total"] == 0
    unknown = client.patch(path, headers=bearer(story.admin_a), json={"hostname": "x"})
    assert unknown.status_code == 422 and unknown.json()["error"]["fields"][0]["field"] == "hostname"


def test_team_b_cannot_reach_team_a_servers(client: TestClient, story: Story) -> None:
    fleet = enrol_fleet(client, story)
    server_id = fleet["web-prod-01"][0]
    body = client.get("/api/v1/servers", headers=bearer(story.admin_b)).json()
    assert body["meta"]["total"] == 0 and body["data"] == []
    for method, path in (("GET", f"/api/v1/servers/{server_id}"), ("PATCH", f"/api/v1/servers/{server_id}"),
                         ("DELETE", f"/api/v1/servers/{server_id}")):
        response = client.request(method, path, headers=bearer(story.admin_b), json={} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path)
    assert client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).status_code == 200


def test_read_scope_cannot_edit_servers(client: TestClient, story: Story) -> None:
    server_id, _ = enrol(client, story.admin_a)
    assert client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.reader_a)).status_code == 200
    response = client.delete(f"/api/v1/servers/{server_id}", headers=bearer(story.reader_a))
    assert response.status_code == 403 and "servers:write" in response.json()["error"]["message"]


def test_deleting_a_server_forgets_it_in_this_process_at_once(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={"uptime_s": 7}).status_code == 200
    parts = runtime.of(client.app)
    assert parts.part(AgentAuthenticator).cached(tokens.hash_token(token)) is not None

    assert client.delete(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).status_code == 204
    assert parts.part(AgentAuthenticator).cached(tokens.hash_token(token)) is None
    assert parts.part(CheckinBuffer).flush(parts.db) == 0  # its buffered check-in went with it
    with parts.db.session(write=False) as session:
        assert session.get(Server, server_id) is None
        [agent_token] = session.scalars(select(AgentToken))
        assert agent_token.server_id is None and agent_token.revoked_at is not None
        [deleted] = session.scalars(select(Event).where(Event.type == "server.deleted"))
        assert deleted.payload["server"]["id"] == server_id


def test_the_service_deletes_only_the_teams_own_servers(client: TestClient, story: Story) -> None:
    """Whatever path removes a server (the API, later the dashboard) goes through one domain function."""
    server_id, token = enrol(client, story.admin_a)
    parts = runtime.of(client.app)
    with parts.db.session(write=True) as session, pytest.raises(NotFound):
        service.delete_server(session, team_id=story.team_b, server_id=server_id, now=utcnow(),
                              views=parts.part(ServerViews), token_cache=parts.part(AgentAuthenticator),
                              checkin_buffer=parts.part(CheckinBuffer))
    assert parts.part(AgentAuthenticator).cached(tokens.hash_token(token)) is not None
    with parts.db.session(write=True) as session:
        service.delete_server(session, team_id=story.team_a, server_id=server_id, now=utcnow(),
                              views=parts.part(ServerViews), token_cache=parts.part(AgentAuthenticator),
                              checkin_buffer=parts.part(CheckinBuffer))
    assert parts.part(AgentAuthenticator).cached(tokens.hash_token(token)) is None
    with parts.db.session(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Server)) == 0
    assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 401
