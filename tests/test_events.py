"""The event feed, ``GET /api/v1/events``: filters, catching up by id, paging, and team isolation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events import service
from tests.support import Story, bearer, enrol, enrol_fleet, get_ok


def _feed(client: TestClient, key: str, **params: Any) -> dict[str, Any]:
    return get_ok(client, key, "/api/v1/events", **params)


def test_events_feed_filters_and_catches_up(client: TestClient, story: Story) -> None:
    fleet = enrol_fleet(client, story)
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


def test_newest_first_by_default_with_the_events_shape(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    client.post("/api/v1/agent/discovery", headers=bearer(token), json={"services": [{"name": "nginx"}]})
    newest, oldest = _feed(client, story.admin_a)["data"]
    assert newest["id"] > oldest["id"]
    assert (newest["type"], newest["resource_type"], newest["resource_id"], newest["server_id"]) == (
        "inventory.changed", "server", server_id, server_id)
    assert newest["data"]["changes"]["services"]["added"] == ["nginx"] and newest["created_at"].endswith("Z")
    assert oldest["type"] == "server.registered" and oldest["data"]["server"]["id"] == server_id


def test_several_types_and_a_time_window(client: TestClient, story: Story) -> None:
    enrol_fleet(client, story)
    both = _feed(client, story.admin_a, type=["server.registered", "inventory.changed"])
    assert both["meta"]["total"] == 5
    assert _feed(client, story.admin_a, type="server.offline")["meta"]["total"] == 0
    past = (utcnow() - timedelta(hours=1)).isoformat()
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert _feed(client, story.admin_a, since=past, until=future)["meta"]["total"] == 5
    assert _feed(client, story.admin_a, until=past)["meta"]["total"] == 0
    # since is inclusive, until exclusive: one event's own moment selects it alone.
    first = _feed(client, story.admin_a, sort="id", per_page=1)["data"][0]
    at_first = _feed(client, story.admin_a, since=first["created_at"], sort="id")["data"]
    assert at_first[0]["id"] == first["id"]
    assert first["id"] not in [e["id"] for e in _feed(client, story.admin_a, until=first["created_at"])["data"]]


def test_pages_cover_every_event_once(client: TestClient, story: Story) -> None:
    enrol_fleet(client, story)
    for sort in ("id", "-id", "created_at", "-created_at"):
        seen: list[int] = []
        params: dict[str, Any] = {"per_page": 2, "sort": sort}
        while True:
            page = _feed(client, story.admin_a, **params)
            assert page["meta"]["total"] == 5
            seen += [event["id"] for event in page["data"]]
            if page["meta"]["next_cursor"] is None:
                break
            params["cursor"] = page["meta"]["next_cursor"]
        assert len(seen) == 5 and len(set(seen)) == 5, sort
        if "id" in sort:
            assert seen == sorted(seen, reverse=sort.startswith("-"))


def test_bad_parameters_are_field_errors(client: TestClient, story: Story) -> None:
    enrol(client, story.admin_a)
    for params, field in (({"after_id": -1}, "after_id"), ({"server_id": 0}, "server_id"),
                          ({"since": "yesterday"}, "since"), ({"until": "1969-12-31T00:00:00Z"}, "until"),
                          ({"sort": "type"}, "sort"), ({"type": "x" * 65}, "type[0]"),
                          ({"cursor": "garbage"}, "cursor")):
        response = client.get("/api/v1/events", headers=bearer(story.admin_a), params=params)
        assert response.status_code == 422, params
        error = response.json()["error"]
        assert error["code"] == "validation_failed" and error["fields"][0]["field"] == field, (params, error)


def test_team_b_sees_none_of_team_a_events(client: TestClient, story: Story) -> None:
    fleet = enrol_fleet(client, story)
    body = _feed(client, story.admin_b)
    assert body["meta"]["total"] == 0 and body["data"] == []
    assert _feed(client, story.admin_b, server_id=fleet["web-prod-01"][0])["meta"]["total"] == 0
    assert _feed(client, story.admin_b, after_id=0, type="server.registered")["meta"]["total"] == 0
    enrol(client, story.admin_b, machine_id="b-1")
    [own] = _feed(client, story.admin_b)["data"]
    assert own["type"] == "server.registered" and own["server_id"] not in {sid for sid, _ in fleet.values()}
    assert _feed(client, story.admin_a)["meta"]["total"] == 5


def test_the_listing_is_scoped_to_the_team_first(client: TestClient, story: Story, db: Database) -> None:
    fleet = enrol_fleet(client, story)
    web1 = fleet["web-prod-01"][0]
    with db.session(write=False) as session:
        mine = session.scalars(service.listing(story.team_a, types=None, server_id=web1, after_id=None, since=None,
                                               until=None)).all()
        assert {event.type for event in mine} == {"server.registered", "inventory.changed"}
        assert session.scalars(service.listing(story.team_b, types=None, server_id=web1, after_id=None,
                                               since=None, until=None)).all() == []
