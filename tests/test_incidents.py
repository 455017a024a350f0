"""Incidents: the seed's list example, filters, cursor, scopes and team walls; the manual lifecycle with its
timeline; the domain API the watching features use (follow-ups, the reopen window, one incident when two
report at once); a server's outage as an incident, and the incidents of its services attached to it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from hostatlas.apikeys.models import ApiKey
from hostatlas.app import create_app
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.http import runtime
from hostatlas.incidents import service
from hostatlas.incidents.models import Incident, IncidentStatus, Severity, Source
from hostatlas.incidents.views import detail_of
from hostatlas.jobs import periodic, replayers
from hostatlas.pipelines import quarantine
from hostatlas.servers.checkins import CheckinBuffer
from hostatlas.settings import Settings
from hostatlas.worker import Worker
from tests.support import Story, assert_envelope, bearer, enrol

T0 = datetime(2026, 3, 21, 14, 28, 41, tzinfo=UTC)
SEED_FIELDS = ["id", "title", "severity", "status", "server", "service", "detected_at", "type"]


def problem(team_id: int, key: str = "crash:nginx", *, source: Source = Source.CRASH, server_id: int | None = None,
            severity: Severity = Severity.CRITICAL, title: str = "nginx process stopped",
            service_name: str | None = "nginx", **data: Any) -> service.Problem:
    return service.Problem(team_id=team_id, source=source, key=key, title=title, severity=severity,
                           server_id=server_id, service=service_name, data=data)


def report(db: Database, p: service.Problem, at: datetime = T0) -> service.Outcome:
    with db.session(write=True) as session:
        return service.report(session, p, at=at)


def recover(db: Database, team_id: int, key: str = "crash:nginx", at: datetime = T0,
            source: Source = Source.CRASH) -> service.Outcome | None:
    with db.session(write=True) as session:
        return service.recover(session, team_id=team_id, source=source, key=key, at=at)


def event_count(db: Database, kind: str, incident_id: int | None = None) -> int:
    stmt = select(func.count()).select_from(Event).where(Event.type == kind)
    if incident_id is not None:
        stmt = stmt.where(Event.resource_type == "incident", Event.resource_id == incident_id)
    with db.session(write=False) as session:
        return session.scalar(stmt) or 0


def incident_events(db: Database, incident_id: int) -> list[str]:
    with db.session(write=False) as session:
        return list(session.scalars(select(Event.type).where(Event.resource_type == "incident",
                                                             Event.resource_id == incident_id).order_by(Event.id)))


def stored(db: Database, incident_id: int) -> Incident:
    with db.session(write=False) as session:
        return session.get_one(Incident, incident_id)


def detail(client: TestClient, key: str, incident_id: int) -> dict[str, Any]:
    response = client.get(f"/api/v1/incidents/{incident_id}", headers=bearer(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def open_manual(client: TestClient, key: str, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/incidents", headers=bearer(key),
                           json={"title": "Checkout returns 502", "severity": "critical", **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_the_seed_example_returns_the_seed_shape(client: TestClient, db: Database, story: Story) -> None:
    server_id, _ = enrol(client, story.admin_a)
    crash = report(db, problem(story.team_a, server_id=server_id, logs=["worker process exited"])).incident
    report(db, problem(story.team_a, "crash:redis", severity=Severity.WARNING, title="redis slow", server_id=server_id))
    report(db, problem(story.team_a, "crash:php", title="php-fpm stopped", server_id=server_id))
    recover(db, story.team_a, "crash:php")

    response = client.get("/api/v1/incidents?status=open&severity=critical", headers=bearer(story.admin_a))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "meta"} and body["meta"] == {"total": 1, "per_page": 25, "next_cursor": None}
    [row] = body["data"]
    assert list(row)[: len(SEED_FIELDS)] == SEED_FIELDS
    assert {key: row[key] for key in SEED_FIELDS} == {
        "id": crash.id, "title": "nginx process stopped", "severity": "critical", "status": "open",
        "server": {"id": server_id, "hostname": "web-prod-01"}, "service": "nginx",
        "detected_at": "2026-03-21T14:28:41Z", "type": "automatic"}
    assert (row["source"], row["resolved_at"], row["time_to_resolve_s"], row["parent_id"], row["attached_count"]) == (
        "crash", None, None, None, 0)


def test_filters_sort_and_cursor_walk_every_incident_once(client: TestClient, db: Database, story: Story) -> None:
    key = story.admin_a
    web, _ = enrol(client, key)
    db_server, _ = enrol(client, key, machine_id="m-db", hostname="db-01")
    opened = [
        open_manual(client, key, title="a", severity="critical", server_id=web, service="nginx",
                    detected_at="2026-03-20T10:00:00Z"),
        open_manual(client, key, title="b", severity="warning", server_id=db_server, service="postgresql",
                    detected_at="2026-03-21T10:00:00Z"),
        open_manual(client, key, title="c", severity="info", detected_at="2026-03-22T10:00:00Z"),
    ]
    ids = [incident["id"] for incident in opened]
    auto = report(db, problem(story.team_a, server_id=web), at=T0).incident
    client.post(f"/api/v1/incidents/{ids[1]}/acknowledge", headers=bearer(key))
    client.post(f"/api/v1/incidents/{ids[2]}/resolve", headers=bearer(key))

    def listed(query: str) -> list[int]:
        response = client.get(f"/api/v1/incidents?{query}", headers=bearer(key))
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()["data"]]

    assert listed("") == [auto.id, *reversed(ids)]  # newest first
    assert listed("status=open&status=acknowledged&sort=id") == [ids[0], ids[1], auto.id]
    assert listed("status=resolved") == [ids[2]]
    assert listed("severity=critical&sort=id") == [ids[0], auto.id]
    assert listed(f"server_id={web}&sort=id") == [ids[0], auto.id]
    assert listed("service=postgresql") == [ids[1]]
    assert listed("type=automatic") == [auto.id] and listed("source=crash") == [auto.id]
    assert listed("type=manual&sort=id") == ids
    assert listed("since=2026-03-21T00:00:00Z&until=2026-03-22T00:00:00Z&sort=id") == [ids[1], auto.id]
    assert listed("sort=-detected_at") == [ids[2], auto.id, ids[1], ids[0]]

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"per_page": 1, "sort": "detected_at"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/incidents", headers=bearer(key), params=params).json()
        seen += [row["id"] for row in page["data"]]
        assert page["meta"]["total"] == 4
        cursor = page["meta"]["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[0], ids[1], auto.id, ids[2]]
    assert_envelope(client.get("/api/v1/incidents?sort=title", headers=bearer(key)), 422, "validation_failed")
    assert_envelope(client.get("/api/v1/incidents?status=closed", headers=bearer(key)), 422, "validation_failed")
    assert_envelope(client.get("/api/v1/incidents?cursor=nonsense", headers=bearer(key)), 422, "validation_failed")


def test_every_route_needs_its_scope(client: TestClient, story: Story) -> None:
    incident_id = open_manual(client, story.admin_a)["id"]
    reader = story.key(story.team_a, ["incidents:read"], name="reader")
    other = story.reader_a  # servers:read only
    reads = [("get", "/api/v1/incidents"), ("get", f"/api/v1/incidents/{incident_id}")]
    writes = [("post", "/api/v1/incidents"), ("post", f"/api/v1/incidents/{incident_id}/acknowledge"),
              ("post", f"/api/v1/incidents/{incident_id}/resolve"), ("post", f"/api/v1/incidents/{incident_id}/reopen"),
              ("post", f"/api/v1/incidents/{incident_id}/notes")]
    for method, path in reads:
        assert client.request(method, path, headers=bearer(reader)).status_code == 200
        error = assert_envelope(client.request(method, path, headers=bearer(other)), 403, "missing_scope")
        assert "incidents:read" in str(error["message"])
        assert_envelope(client.request(method, path), 401, "missing_api_key")
    for method, path in writes:
        error = assert_envelope(client.request(method, path, headers=bearer(reader), json={"message": "x"}), 403,
                                "missing_scope")
        assert "incidents:write" in str(error["message"])


def test_another_teams_incident_is_not_found(client: TestClient, story: Story) -> None:
    server_a, _ = enrol(client, story.admin_a)
    incident_id = open_manual(client, story.admin_a)["id"]
    outsider = bearer(story.admin_b)
    assert_envelope(client.get(f"/api/v1/incidents/{incident_id}", headers=outsider), 404, "incident_not_found")
    for action in ("acknowledge", "resolve", "reopen"):
        assert_envelope(client.post(f"/api/v1/incidents/{incident_id}/{action}", headers=outsider), 404,
                        "incident_not_found")
    assert_envelope(client.post(f"/api/v1/incidents/{incident_id}/notes", headers=outsider, json={"message": "hi"}),
                    404, "incident_not_found")
    assert client.get("/api/v1/incidents", headers=outsider).json()["data"] == []
    refused = client.post("/api/v1/incidents", headers=outsider,
                          json={"title": "x", "severity": "info", "server_id": server_a})
    assert assert_envelope(refused, 422, "validation_failed")["fields"] == [
        {"field": "server_id", "code": "server_not_found", "message": "No such server in this team"}]
    assert detail(client, story.admin_a, incident_id)["status"] == "open"


def test_manual_lifecycle_keeps_a_timeline_and_one_event_per_transition(client: TestClient, db: Database,
                                                                        story: Story) -> None:
    key = story.key(story.team_a, ["incidents:write"], name="on-call Alice")
    with db.session(write=False) as session:
        key_id = session.scalars(select(ApiKey.id).where(ApiKey.name == "on-call Alice")).one()
    actor = f"api_key:{key_id}:on-call Alice"
    created = open_manual(client, key, message="Customers report failed payments", detected_at="2026-03-21T14:00:00Z")
    incident_id = created["id"]
    assert (created["type"], created["source"], created["status"], created["detected_at"]) == (
        "manual", "manual", "open", "2026-03-21T14:00:00Z")
    assert [(entry["kind"], entry["actor"], entry["message"]) for entry in created["timeline"]] == [
        ("opened", actor, "Customers report failed payments")]

    for _ in range(2):
        acked = client.post(f"/api/v1/incidents/{incident_id}/acknowledge", headers=bearer(key),
                            json={"message": "Looking"})
        assert acked.status_code == 200, acked.text
    assert acked.json()["status"] == "acknowledged" and acked.json()["acknowledged_by"] == actor
    assert acked.json()["acknowledged_at"] is not None
    note = client.post(f"/api/v1/incidents/{incident_id}/notes", headers=bearer(key), json={"message": "DB failover"})
    assert note.status_code == 201 and note.json()["kind"] == "note" and note.json()["actor"] == actor
    resolved = client.post(f"/api/v1/incidents/{incident_id}/resolve", headers=bearer(key)).json()
    assert resolved["status"] == "resolved" and resolved["resolved_by"] == actor
    expected = (datetime.fromisoformat(resolved["resolved_at"]) - datetime.fromisoformat(resolved["detected_at"]))
    assert resolved["time_to_resolve_s"] == int(expected.total_seconds()) > 0
    client.post(f"/api/v1/incidents/{incident_id}/resolve", headers=bearer(key))  # again: nothing changes
    assert_envelope(client.post(f"/api/v1/incidents/{incident_id}/acknowledge", headers=bearer(key)), 409,
                    "incident_resolved")
    reopened = client.post(f"/api/v1/incidents/{incident_id}/reopen", headers=bearer(key),
                           json={"message": "Back again"}).json()
    assert reopened["status"] == "open" and reopened["resolved_at"] is None and reopened["acknowledged_at"] is None
    assert reopened["time_to_resolve_s"] is None

    timeline = detail(client, story.admin_a, incident_id)["timeline"]
    assert [entry["kind"] for entry in timeline] == ["opened", "acknowledged", "note", "resolved", "reopened"]
    assert [entry["id"] for entry in timeline] == sorted(entry["id"] for entry in timeline)
    assert all(entry["actor"] == actor for entry in timeline)
    assert incident_events(db, incident_id) == ["incident.created", "incident.acknowledged", "incident.resolved",
                                                "incident.reopened"]
    with db.session(write=False) as session:
        payload = session.scalars(select(Event.payload).where(Event.type == "incident.resolved")).one()
    assert payload["id"] == incident_id and payload["status"] == "resolved" and "timeline" not in payload


def test_the_same_problem_again_is_a_follow_up_that_may_raise_the_severity(db: Database, story: Story) -> None:
    first = report(db, problem(story.team_a, severity=Severity.WARNING, logs=["a"]))
    again = report(db, problem(story.team_a, severity=Severity.CRITICAL, logs=["b"]), at=T0 + timedelta(minutes=1))
    lower = report(db, problem(story.team_a, severity=Severity.INFO, logs=["c"]), at=T0 + timedelta(minutes=2))
    assert first.opened and not again.opened and not lower.opened
    assert first.incident.id == again.incident.id == lower.incident.id
    assert stored(db, first.incident.id).severity == "critical"
    with db.session(write=False) as session:
        incident = service.get_incident(session, team_id=story.team_a, incident_id=first.incident.id)
        timeline = detail_of(session, incident).timeline
    assert [(entry.kind, entry.actor, entry.data) for entry in timeline] == [
        ("opened", "agent", {"logs": ["a"]}), ("follow_up", "agent", {"logs": ["b"]}),
        ("follow_up", "agent", {"logs": ["c"]})]
    assert incident_events(db, first.incident.id) == ["incident.created"]


def test_flapping_reopens_within_the_window_and_opens_anew_after_it(db: Database, story: Story) -> None:
    p = problem(story.team_a, "heartbeat:12", source=Source.HEARTBEAT, title="backup is down", service_name=None)
    first = report(db, p, at=T0).incident
    assert recover(db, story.team_a, "heartbeat:12", at=T0 + timedelta(minutes=5), source=Source.HEARTBEAT)
    flap = report(db, p, at=T0 + timedelta(minutes=20))
    assert flap.opened and flap.incident.id == first.id
    assert recover(db, story.team_a, "heartbeat:12", at=T0 + timedelta(minutes=25), source=Source.HEARTBEAT)
    assert recover(db, story.team_a, "heartbeat:12", at=T0 + timedelta(minutes=26), source=Source.HEARTBEAT) is None
    later = report(db, p, at=T0 + timedelta(minutes=25) + service.REOPEN_WINDOW)
    assert later.opened and later.incident.id != first.id
    assert incident_events(db, first.id) == ["incident.created", "incident.resolved", "incident.reopened",
                                             "incident.resolved"]
    assert incident_events(db, later.incident.id) == ["incident.created"]
    assert stored(db, first.id).detected_at == T0  # one incident, from its first detection


def test_two_reports_at_once_open_one_incident(db: Database, story: Story) -> None:
    """The second writer waits for the first (PostgreSQL: on the unique index; SQLite: on the write lock),
    then appends a follow-up instead of opening a second incident."""
    results: list[service.Outcome] = []
    with db.session(write=True) as first:
        results.append(service.report(first, problem(story.team_a), at=T0))
        first.flush()
        second = threading.Thread(target=lambda: results.append(report(db, problem(story.team_a), T0)))
        second.start()
        second.join(timeout=0.5)  # it blocks while the first transaction holds the key
    second.join(timeout=10)
    assert [outcome.opened for outcome in results] == [True, False]
    with db.session(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 1
    assert event_count(db, "incident.created") == 1


@pytest.fixture
def fleet_app(db: Database, settings: Settings) -> Iterator[tuple[TestClient, Settings]]:
    fast = settings.model_copy(update={"offline_after": 300, "flush_interval": 1})
    with TestClient(create_app(fast, db=db), raise_server_exceptions=False) as test_client:
        yield test_client, fast


def go_offline(db: Database, fast: Settings, at: datetime) -> None:
    assert Worker(db, fast, periodic()).run_once(at + timedelta(seconds=302))["servers.mark_offline"] >= 1


def check_in(client: TestClient, db: Database, token: str) -> None:
    assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 200
    runtime.of(client.app).part(CheckinBuffer).flush(db)


def outage_of(db: Database, team_id: int, server_id: int) -> Incident:
    with db.session(write=False) as session:
        return session.scalars(select(Incident).where(Incident.team_id == team_id, Incident.source == "server",
                                                      Incident.server_id == server_id)).one()


def test_a_silent_server_opens_an_incident_that_its_next_check_in_resolves(
        fleet_app: tuple[TestClient, Settings], db: Database, story: Story) -> None:
    client, fast = fleet_app
    server_id, token = enrol(client, story.admin_a)
    go_offline(db, fast, utcnow())
    outage = outage_of(db, story.team_a, server_id)
    assert (outage.title, outage.severity, outage.status, outage.type) == (
        "web-prod-01 is offline", "critical", "open", "automatic")
    listed = client.get("/api/v1/incidents?source=server", headers=bearer(story.admin_a)).json()["data"]
    assert [row["id"] for row in listed] == [outage.id] and listed[0]["server"]["id"] == server_id

    check_in(client, db, token)
    check_in(client, db, token)  # a later check-in resolves nothing more
    resolved = detail(client, story.admin_a, outage.id)
    assert resolved["status"] == "resolved" and resolved["resolved_by"] == "system"
    assert resolved["time_to_resolve_s"] is not None
    assert [entry["kind"] for entry in resolved["timeline"]] == ["opened", "resolved"]
    assert resolved["timeline"][1]["data"]["back_at"].endswith("Z")
    assert incident_events(db, outage.id) == ["incident.created", "incident.resolved"]


def test_deleting_an_offline_server_ends_its_outage(fleet_app: tuple[TestClient, Settings], db: Database,
                                                   story: Story) -> None:
    client, fast = fleet_app
    server_id, _ = enrol(client, story.admin_a)
    go_offline(db, fast, utcnow())
    outage = outage_of(db, story.team_a, server_id)
    assert client.delete(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).status_code == 204
    shown = detail(client, story.admin_a, outage.id)
    assert (shown["status"], shown["resolved_by"], shown["server"]) == ("resolved", "system", None)
    assert incident_events(db, outage.id) == ["incident.created", "incident.resolved"]


def test_problems_of_an_offline_server_are_attached_to_its_outage_and_resume_after_it(
        fleet_app: tuple[TestClient, Settings], db: Database, story: Story) -> None:
    client, fast = fleet_app
    key = story.admin_a
    server_id, token = enrol(client, key)
    before = report(db, problem(story.team_a, "heartbeat:7", source=Source.HEARTBEAT, title="backup down",
                                server_id=server_id, service_name=None), at=utcnow()).incident
    go_offline(db, fast, utcnow())
    outage = outage_of(db, story.team_a, server_id)
    assert stored(db, before.id).parent_id == outage.id and stored(db, before.id).status == "open"

    crash = report(db, problem(story.team_a, server_id=server_id, logs=["exit 1"]), at=utcnow())
    disk = report(db, problem(story.team_a, "alert:1:47", source=Source.ALERT, title="disk full",
                              server_id=server_id, service_name=None), at=utcnow())
    assert crash.opened and crash.suppressed and disk.suppressed
    assert stored(db, crash.incident.id).parent_id == outage.id
    assert event_count(db, "incident.created", crash.incident.id) == 0
    assert event_count(db, "incident.created", disk.incident.id) == 0
    # The list shows one incident for the server: its outage, with the others attached.
    listed = client.get(f"/api/v1/incidents?server_id={server_id}&status=open", headers=bearer(key)).json()["data"]
    assert [(row["id"], row["attached_count"]) for row in listed] == [(outage.id, 3)]
    everything = client.get(f"/api/v1/incidents?server_id={server_id}&include_attached=true", headers=bearer(key))
    assert len(everything.json()["data"]) == 4
    shown = detail(client, key, outage.id)
    assert [row["id"] for row in shown["attached"]] == [before.id, crash.incident.id, disk.incident.id]
    attached = [entry for entry in shown["timeline"] if entry["kind"] == "attached"]
    assert [entry["data"]["incident_id"] for entry in attached] == [before.id, crash.incident.id, disk.incident.id]
    assert attached[1]["data"]["source"] == "crash" and attached[1]["data"]["data"] == {"logs": ["exit 1"]}

    # The disk recovers during the outage: it was never announced, so it is never announced resolved either.
    assert recover(db, story.team_a, "alert:1:47", at=utcnow(), source=Source.ALERT)
    assert incident_events(db, disk.incident.id) == []

    check_in(client, db, token)
    assert stored(db, outage.id).status == "resolved"
    # The crash outlived the outage: announced now, once; the heartbeat incident was announced long ago.
    assert incident_events(db, crash.incident.id) == ["incident.created"]
    assert incident_events(db, before.id) == ["incident.created"]
    assert stored(db, crash.incident.id).parent_id is None and not stored(db, crash.incident.id).suppressed
    assert stored(db, before.id).parent_id is None
    assert stored(db, disk.incident.id).parent_id == outage.id  # over during the outage: stays in its history
    kinds = [entry["kind"] for entry in detail(client, key, crash.incident.id)["timeline"]]
    assert kinds == ["opened", "attached", "detached"]

    fresh = report(db, problem(story.team_a, "crash:redis", title="redis stopped", server_id=server_id), at=utcnow())
    assert fresh.opened and not fresh.suppressed and stored(db, fresh.incident.id).parent_id is None
    assert incident_events(db, fresh.incident.id) == ["incident.created"]


def test_an_outage_incident_that_cannot_be_shown_never_holds_up_other_check_ins(
        fleet_app: tuple[TestClient, Settings], db: Database, story: Story, settings: Settings) -> None:
    client, fast = fleet_app
    broken, broken_token = enrol(client, story.admin_a, machine_id="m-broken", hostname="broken")
    fine, fine_token = enrol(client, story.admin_a, machine_id="m-fine", hostname="fine")
    go_offline(db, fast, utcnow())
    with db.session(write=True) as session:
        session.execute(update(Incident).where(Incident.server_id == broken).values(type="bogus"))
    for token in (broken_token, fine_token):
        assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 200
    runtime.of(client.app).part(CheckinBuffer).flush(db)
    assert outage_of(db, story.team_a, fine).status == "resolved"
    assert outage_of(db, story.team_a, broken).status == "open"
    with db.session(write=False) as session:
        [item] = quarantine.listing(session, pipeline="servers.checkins")
    assert "ValueError" in item.reason

    with db.session(write=True) as session:
        session.execute(update(Incident).where(Incident.server_id == broken).values(type="automatic"))
    assert quarantine.replay(db, item.id, replayers(db, settings), now=utcnow()) is True
    assert outage_of(db, story.team_a, broken).status == "resolved"


@pytest.mark.parametrize("body", [
    {"title": "nul\x00"}, {"title": "x" * 201}, {"title": "   "}, {"service": "ngi\x00nx"}, {"severity": "fatal"},
    {"detected_at": "2999-01-01T00:00:00Z"}, {"detected_at": 1700000000}, {"server_id": True}, {"extra": 1},
    {"message": "m" * 10_001},
])
def test_bad_input_is_422_never_500(client: TestClient, story: Story, body: dict[str, Any]) -> None:
    response = client.post("/api/v1/incidents", headers=bearer(story.admin_a),
                           json={"title": "t", "severity": "info", **body})
    assert_envelope(response, 422, "validation_failed")


def test_a_lone_surrogate_is_422(client: TestClient, story: Story) -> None:
    response = client.post("/api/v1/incidents", headers={**bearer(story.admin_a), "Content-Type": "application/json"},
                           content=b'{"title": "\\ud800", "severity": "info"}')
    assert_envelope(response, 422, "validation_failed")


def test_bad_notes_queries_and_future_moments_are_422(client: TestClient, story: Story) -> None:
    key = bearer(story.admin_a)
    incident_id = open_manual(client, story.admin_a)["id"]
    for note in ({"message": ""}, {"message": "a\x00b"}, {"message": "n" * 10_001}, {}):
        assert_envelope(client.post(f"/api/v1/incidents/{incident_id}/notes", headers=key, json=note), 422,
                        "validation_failed")
    assert_envelope(client.get("/api/v1/incidents?service=a%00b", headers=key), 422, "validation_failed")
    assert_envelope(client.get("/api/v1/incidents?since=yesterday", headers=key), 422, "validation_failed")
    assert_envelope(client.get("/api/v1/incidents/0", headers=key), 422, "validation_failed")
    future = (utcnow() + timedelta(days=1)).isoformat()
    refused = client.post("/api/v1/incidents", headers=key, json={"title": "t", "severity": "info",
                                                                  "detected_at": future})
    assert_envelope(refused, 422, "validation_failed")
    assert refused.json()["error"]["fields"][0]["field"] == "detected_at"


def test_a_reopened_incident_cannot_duplicate_a_newer_open_one(db: Database, client: TestClient,
                                                              story: Story) -> None:
    old = report(db, problem(story.team_a), at=T0).incident
    recover(db, story.team_a, at=T0 + timedelta(minutes=1))
    newer = report(db, problem(story.team_a), at=T0 + timedelta(hours=2)).incident
    assert newer.id != old.id
    assert_envelope(client.post(f"/api/v1/incidents/{old.id}/reopen", headers=bearer(story.admin_a)), 409,
                    "incident_superseded")
    assert stored(db, old.id).status == IncidentStatus.RESOLVED.value
