"""The inventory: what agents discovered, listed across the team's servers, and each server's change history."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.errors import NotFound
from hostatlas.inventory import service
from hostatlas.inventory.models import Certificate, Container, Domain, InventoryChange, Service
from tests.support import SEED_SNAPSHOT, Story, bearer, enrol, enrol_fleet, get_ok

KINDS = ("services", "domains", "containers", "certificates")


def test_inventory_lists_across_servers(client: TestClient, story: Story) -> None:
    fleet = enrol_fleet(client, story)
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


def test_every_kind_filters_by_its_own_fields(client: TestClient, story: Story) -> None:
    fleet = enrol_fleet(client, story)
    web1, staging = fleet["web-prod-01"][0], fleet["db-staging-01"][0]
    admin = story.admin_a

    nginx = get_ok(client, admin, "/api/v1/services", name="nginx")["data"]
    assert [(s["server"]["id"], s["unit"], s["pid"], s["ports"], s["log_paths"]) for s in nginx] == [
        (web1, "nginx.service", 812, [80, 443], ["/var/log/nginx/error.log"])]
    assert get_ok(client, admin, "/api/v1/services", server_id=staging)["meta"]["total"] == 1
    assert get_ok(client, admin, "/api/v1/services", name="nginx", server_id=staging)["meta"]["total"] == 0

    named = get_ok(client, admin, "/api/v1/domains", name="staging.example.com")["data"]
    assert [(d["server"]["hostname"], d["source"]) for d in named] == [("db-staging-01", None)]
    assert get_ok(client, admin, "/api/v1/domains", expiring_within_days=0)["meta"]["total"] == 2

    by_image = get_ok(client, admin, "/api/v1/containers", image="acme/worker:2.1")["data"]
    assert {(c["container_id"], c["server"]["hostname"]) for c in by_image} == {
        ("3f2a9c1b7d4e", "web-prod-01"), ("3f2a9c1b7d4e", "db-staging-01")}
    assert get_ok(client, admin, "/api/v1/containers", image="acme/worker")["meta"]["total"] == 0  # exact match
    assert get_ok(client, admin, "/api/v1/containers", status="exited")["meta"]["total"] == 0

    by_subject = get_ok(client, admin, "/api/v1/certificates", q="CN=app")["data"]
    assert len(by_subject) == 2 and by_subject[0]["issuer"] == "CN=R3, O=Let's Encrypt"
    assert by_subject[0]["days_until_expiry"] < 0 and by_subject[0]["not_after"] == "2026-08-14T12:00:00Z"
    assert get_ok(client, admin, "/api/v1/certificates", q="50%_off")["meta"]["total"] == 0  # wildcards are text
    assert get_ok(client, admin, "/api/v1/certificates", expiring_within_days=0,
                server_id=web1)["meta"]["total"] == 1


def test_pages_cover_every_item_once_in_every_sort(client: TestClient, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    many = {"services": [{"name": f"svc-{n:02d}", "status": "running"} for n in range(7)]}
    assert client.post("/api/v1/agent/discovery", headers=bearer(token), json=many).status_code == 200
    for sort in ("id", "-id", "name", "-name", "updated_at", "-updated_at"):
        seen: list[str] = []
        params: dict[str, Any] = {"per_page": 3, "sort": sort}
        while True:
            page = get_ok(client, story.admin_a, "/api/v1/services", **params)
            assert page["meta"]["total"] == 7 and len(page["data"]) <= 3
            seen += [item["name"] for item in page["data"]]
            if page["meta"]["next_cursor"] is None:
                break
            params["cursor"] = page["meta"]["next_cursor"]
        assert sorted(seen) == [f"svc-{n:02d}" for n in range(7)], sort
        if sort.endswith("name"):
            assert seen == sorted(seen, reverse=sort.startswith("-"))


def test_bad_list_parameters_are_field_errors(client: TestClient, story: Story) -> None:
    enrol_fleet(client, story)
    cases = [("/api/v1/services", {"sort": "version"}, "sort"),
             ("/api/v1/services", {"per_page": 0}, "per_page"),
             ("/api/v1/domains", {"expiring_within_days": -1}, "expiring_within_days"),
             ("/api/v1/domains", {"cursor": "garbage"}, "cursor"),
             ("/api/v1/containers", {"server_id": 0}, "server_id"),
             ("/api/v1/certificates", {"expiring_within_days": 3651}, "expiring_within_days"),
             ("/api/v1/certificates", {"sort": "subject"}, "sort")]
    for path, params, field in cases:
        response = client.get(path, headers=bearer(story.admin_a), params=params)
        assert response.status_code == 422, (path, params)
        error = response.json()["error"]
        assert error["code"] == "validation_failed" and error["fields"][0]["field"] == field, (path, params)
    for query in ("kind=daemon", "action=renamed"):
        server_id = client.get("/api/v1/servers", headers=bearer(story.admin_a)).json()["data"][0]["id"]
        response = client.get(f"/api/v1/servers/{server_id}/changes?{query}", headers=bearer(story.admin_a))
        assert response.status_code == 422 and response.json()["error"]["fields"][0]["field"] == query.split("=")[0]


def test_team_b_sees_nothing_of_team_a_inventory(client: TestClient, story: Story) -> None:
    fleet = enrol_fleet(client, story)
    server_id = fleet["web-prod-01"][0]
    for collection in KINDS:
        body = client.get(f"/api/v1/{collection}", headers=bearer(story.admin_b)).json()
        assert body["meta"]["total"] == 0 and body["data"] == [], collection
        filtered = client.get(f"/api/v1/{collection}?server_id={server_id}", headers=bearer(story.admin_b)).json()
        assert filtered["meta"]["total"] == 0, collection
    changes = client.get(f"/api/v1/servers/{server_id}/changes", headers=bearer(story.admin_b))
    assert changes.status_code == 404 and changes.json()["error"]["code"] == "server_not_found"
    assert client.get(f"/api/v1/servers/{server_id}/changes", headers=bearer(story.admin_a)).status_code == 200


def test_a_kind_left_out_of_a_snapshot_is_kept(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    client.post("/api/v1/agent/discovery", headers=bearer(token), json=SEED_SNAPSHOT)
    only_services = client.post("/api/v1/agent/discovery", headers=bearer(token),
                                json={"services": SEED_SNAPSHOT["services"]}).json()
    assert only_services["summary"] == {"added": 0, "changed": 0, "removed": 0}
    emptied = client.post("/api/v1/agent/discovery", headers=bearer(token), json={"containers": []}).json()
    assert emptied["containers"]["removed"] == ["3f2a9c1b7d4e"]
    detail = client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).json()
    assert len(detail["domains"]) == 2 and detail["containers"] == []


def test_the_change_history_is_newest_first_and_filtered(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    client.post("/api/v1/agent/discovery", headers=bearer(token), json=SEED_SNAPSHOT)
    later = copy.deepcopy(SEED_SNAPSHOT)
    later["domains"] = [dict(SEED_SNAPSHOT["domains"][0], ssl_expiry="2026-11-12")]
    client.post("/api/v1/agent/discovery", headers=bearer(token), json=later)
    path = f"/api/v1/servers/{server_id}/changes"

    history = get_ok(client, story.admin_a, path, per_page=100)
    assert history["meta"]["total"] == 9  # seven added, then one changed and one removed
    ids = [change["id"] for change in history["data"]]
    assert ids == sorted(ids, reverse=True)
    assert {(c["kind"], c["action"]) for c in history["data"][:2]} == {("domain", "changed"), ("domain", "removed")}
    [changed] = get_ok(client, story.admin_a, path, kind="domain", action="changed")["data"]
    assert (changed["key"], changed["before"]["ssl_expiry"], changed["after"]["ssl_expiry"]) == (
        "app.example.com", "2026-08-14", "2026-11-12")
    assert get_ok(client, story.admin_a, path, kind="certificate")["meta"]["total"] == 1
    first_page = get_ok(client, story.admin_a, path, per_page=5, sort="created_at")
    assert first_page["data"][0]["action"] == "added" and first_page["meta"]["next_cursor"] is not None


def test_removing_a_server_removes_what_was_discovered_on_it(client: TestClient, story: Story, db: Database) -> None:
    fleet = enrol_fleet(client, story)
    gone = fleet["web-prod-01"][0]
    assert client.delete(f"/api/v1/servers/{gone}", headers=bearer(story.admin_a)).status_code == 204
    with db.session(write=False) as session:
        for model in (Service, Domain, Container, Certificate, InventoryChange):
            assert session.scalar(select(func.count()).select_from(model).where(model.server_id == gone)) == 0
            assert session.scalar(select(func.count()).select_from(model)) > 0, model  # db-staging-01's remain
    assert get_ok(client, story.admin_a, "/api/v1/services")["meta"]["total"] == 1


def test_the_listings_are_team_scoped_services(db: Database, story: Story, client: TestClient) -> None:
    """The listing functions the API (and later the dashboard) share: team first, then the filters."""
    fleet = enrol_fleet(client, story)
    web1 = fleet["web-prod-01"][0]
    with db.session(write=False) as session:
        mine = session.scalars(service.service_listing(story.team_a, server_id=None, name="postgresql",
                                                       status=None)).all()
        assert len(mine) == 2
        assert session.scalars(service.service_listing(story.team_b, server_id=web1, name=None,
                                                       status=None)).all() == []
        soon = session.scalars(service.domain_listing(story.team_a, server_id=None, name=None,
                                                      expiring_within_days=6, today=utcnow().date())).all()
        assert len(soon) == 3
        assert session.scalars(service.domain_listing(story.team_a, server_id=None, name=None,
                                                      expiring_within_days=6, today=date(2026, 1, 1))).all() == []
        assert len(session.scalars(service.certificate_listing(story.team_a, server_id=web1, q="letsencrypt",
                                                               expiring_within_days=None, now=utcnow())).all()) == 1
        assert session.scalars(service.container_listing(story.team_b, server_id=None, status=None,
                                                         image=None)).all() == []
        with pytest.raises(NotFound):
            service.change_listing(session, story.team_b, server_id=web1, kind=None, action=None)
        counts = service.count_items(session, [web1, fleet["web-prod-02"][0]])
        assert (counts[web1].services, counts[web1].domains) == (3, 2)
        assert (counts[fleet["web-prod-02"][0]].services, counts[fleet["web-prod-02"][0]].domains) == (0, 0)
