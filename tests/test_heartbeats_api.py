"""The heartbeats resource: the seed's create example, validation, the plan cap, listing, team scoping,
pause/resume, token rotation, rescheduling on edit, the ping log and the flips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostatlas.db.engine import Database
from hostatlas.heartbeats import machine, state
from hostatlas.heartbeats.models import Heartbeat, HeartbeatFlip, HeartbeatPing, HeartbeatStatus, PingKind
from hostatlas.http import runtime
from hostatlas.teams.models import Team
from tests.support import Story, assert_envelope, bearer, enrol

pytestmark = pytest.mark.long_running(40)

SEED_EXAMPLE = {"name": "nightly-backup", "interval": 86400, "grace": 3600}
T0 = datetime(2026, 3, 21, 14, 0, tzinfo=UTC)


def create(client: TestClient, key: str, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/heartbeats", headers=bearer(key), json={"interval": 3600, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def public_url(client: TestClient) -> str:
    return runtime.of(client.app).settings.public_url.rstrip("/")


def test_the_seed_example_returns_the_seed_shape(client: TestClient, story: Story) -> None:
    response = client.post("/api/v1/heartbeats", headers=bearer(story.admin_a), json=SEED_EXAMPLE)
    assert response.status_code == 201, response.text
    body = response.json()
    seed_fields = {"id", "name", "slug", "ping_url", "interval", "grace", "status", "created_at"}
    assert seed_fields <= set(body)
    assert (body["name"], body["slug"], body["interval"], body["grace"], body["status"]) == (
        "nightly-backup", "nightly-backup", 86400, 3600, "new")
    token = body["ping_url"].rsplit("/", 1)[1]
    assert body["ping_url"] == f"{public_url(client)}/heartbeat/{token}" and len(token) >= 20
    assert body["created_at"].endswith("Z")
    assert (body["schedule"], body["timezone"], body["tags"], body["server_id"], body["manual_resume"]) == (
        None, "UTC", [], None, False)
    assert body["last_ping_at"] is None and body["next_due_at"] is None
    with story.db.session(write=False) as session:
        stored = session.get(Heartbeat, body["id"])
        assert stored is not None and stored.ping_token == token and stored.ping_token_hash != token
        assert len(stored.ping_token_hash) == 64
    detail = client.get(f"/api/v1/heartbeats/{body['id']}", headers=bearer(story.admin_a)).json()
    assert {key: detail[key] for key in body} == body
    assert detail["runs"] == {"count": 0, "p50_s": None, "p95_s": None} and detail["too_often_recent"] == 0
    # The ping_url answers: a ping to its path brings the heartbeat up.
    answer = client.get(body["ping_url"].removeprefix(public_url(client)))
    assert (answer.status_code, answer.text) == (200, "OK")
    after = client.get(f"/api/v1/heartbeats/{body['id']}", headers=bearer(story.admin_a)).json()
    assert after["status"] == "up" and after["last_ping_at"] is not None and after["next_due_at"] is not None


def test_slugs_are_derived_unique_and_explicit_ones_conflict(client: TestClient, story: Story) -> None:
    key = story.admin_a
    assert create(client, key, name="Nightly Backup (db)")["slug"] == "nightly-backup-db"
    assert create(client, key, name="nightly backup db")["slug"] == "nightly-backup-db-2"
    assert create(client, key, name="Nightly-Backup-DB")["slug"] == "nightly-backup-db-3"
    assert create(client, key, name="start")["slug"] == "start-2"  # a ping URL suffix is never a slug
    assert create(client, key, name="!!!")["slug"] == "heartbeat"
    assert create(client, key, name="Über 42")["slug"] == "uber-42"
    assert create(client, key, name="42")["slug"] == "42-2"
    assert create(client, key, name="x", slug="custom-1")["slug"] == "custom-1"
    taken = client.post("/api/v1/heartbeats", headers=bearer(key), json={"name": "y", "slug": "custom-1",
                                                                         "interval": 3600})
    assert_envelope(taken, 409, "slug_taken")
    # Another team may use the same slug.
    assert create(client, story.admin_b, name="Nightly Backup (db)")["slug"] == "nightly-backup-db"


@pytest.mark.parametrize(("body", "fields"), [
    ({"name": "a", "interval": 3600, "schedule": "0 3 * * *"}, {"interval", "schedule"}),
    ({"name": "a"}, {"interval"}),
    ({"name": "a", "schedule": "61 3 * * *"}, {"schedule"}),
    ({"name": "a", "schedule": "* * * * * *"}, {"schedule"}),
    ({"name": "a", "schedule": "0 0 30 2 *"}, {"schedule"}),
    ({"name": "a", "schedule": "0 3 * * *", "timezone": "Mars/Olympus"}, {"timezone"}),
    ({"name": "a", "interval": 3600, "min_runtime": 600, "max_runtime": 60}, {"min_runtime"}),
    ({"name": "a", "interval": 10**30}, {"interval"}),
    ({"name": "a", "interval": 59}, {"interval"}),
    ({"name": "a", "interval": 3600, "grace": -1}, {"grace"}),
    ({"name": "a", "interval": 3600, "grace": 10**12}, {"grace"}),
    ({"name": "a", "interval": 3600.5}, {"interval"}),
    ({"name": "a", "interval": True}, {"interval"}),
    ({"name": "a\x00b", "interval": 3600}, {"name"}),
    ({"name": "  ", "interval": 3600}, {"name"}),
    ({"name": "a", "interval": 3600, "slug": "Not A Slug"}, {"slug"}),
    ({"name": "a", "interval": 3600, "slug": "fail"}, {"slug"}),
    ({"name": "a", "interval": 3600, "slug": "200"}, {"slug"}),
    ({"name": "a", "interval": 3600, "tags": ["no spaces"]}, {"tags[0]"}),
    ({"name": "a", "interval": 3600, "server_id": 2**63}, {"server_id"}),
    ({"name": "a", "interval": 3600, "unknown": 1}, {"unknown"}),
    ({"name": "a", "interval": 3600, "manual_resume": 1}, {"manual_resume"}),
])
def test_bad_input_is_a_422_naming_the_fields(client: TestClient, story: Story, body: dict[str, Any],
                                             fields: set[str]) -> None:
    response = client.post("/api/v1/heartbeats", headers=bearer(story.admin_a), json=body)
    error = assert_envelope(response, 422, "validation_failed")
    assert {problem["field"] for problem in error["fields"]} == fields  # type: ignore[attr-defined]


def test_server_id_must_be_the_teams_server(client: TestClient, story: Story) -> None:
    ours, _ = enrol(client, story.admin_a)
    theirs, _ = enrol(client, story.admin_b, machine_id="m-b", hostname="b-01")
    created = create(client, story.admin_a, name="on a host", server_id=ours)
    assert created["server_id"] == ours
    for server_id in (theirs, 999_999):
        response = client.post("/api/v1/heartbeats", headers=bearer(story.admin_a),
                               json={"name": "x", "interval": 3600, "server_id": server_id})
        error = assert_envelope(response, 422, "validation_failed")
        assert error["fields"] == [{"field": "server_id", "code": "server_not_found",
                                    "message": "No such server in this team"}]
    moved = client.patch(f"/api/v1/heartbeats/{created['id']}", headers=bearer(story.admin_a),
                         json={"server_id": theirs})
    assert_envelope(moved, 422, "validation_failed")
    cleared = client.patch(f"/api/v1/heartbeats/{created['id']}", headers=bearer(story.admin_a),
                           json={"server_id": None})
    assert cleared.status_code == 200 and cleared.json()["server_id"] is None


def test_a_free_team_has_twenty_heartbeats_a_pro_team_more(client: TestClient, story: Story) -> None:
    for number in range(20):
        create(client, story.admin_b, name=f"job {number}")
    over = client.post("/api/v1/heartbeats", headers=bearer(story.admin_b), json={"name": "21st", "interval": 3600})
    assert_envelope(over, 403, "plan_limit_reached")
    for number in range(21):  # team A is the default team, on pro
        create(client, story.admin_a, name=f"job {number}")
    total = client.get("/api/v1/heartbeats", headers=bearer(story.admin_a)).json()["meta"]["total"]
    assert total == 21


def test_listing_filters_sorts_and_pages(client: TestClient, story: Story) -> None:
    key = story.admin_a
    server_id, _ = enrol(client, key)
    backup = create(client, key, name="backup", tags=["prod", "db", "prod"], server_id=server_id)
    assert backup["tags"] == ["db", "prod"]
    report = create(client, key, name="report", schedule="30 2 * * 1-5", timezone="Europe/Berlin", interval=None,
                    tags=["prod"])
    assert (report["schedule"], report["interval"], report["timezone"]) == ("30 2 * * 1-5", None, "Europe/Berlin")
    cleanup = create(client, key, name="cleanup")
    client.post(f"/api/v1/heartbeats/{cleanup['id']}/pause", headers=bearer(key))
    create(client, story.admin_b, name="theirs", tags=["prod"])

    def names(query: str) -> list[str]:
        response = client.get(f"/api/v1/heartbeats?{query}", headers=bearer(key))
        assert response.status_code == 200, response.text
        return [heartbeat["name"] for heartbeat in response.json()["data"]]

    assert names("") == ["backup", "report", "cleanup"]
    assert names("tag=prod&sort=-name") == ["report", "backup"]
    assert names("tag=db") == ["backup"]
    assert names(f"server_id={server_id}") == ["backup"]
    assert names("server_id=999999") == []
    assert names("status=paused") == ["cleanup"]
    assert names("status=new&sort=name") == ["backup", "report"]
    first = client.get("/api/v1/heartbeats?per_page=2&sort=name", headers=bearer(key)).json()
    assert [h["name"] for h in first["data"]] == ["backup", "cleanup"] and first["meta"]["total"] == 3
    second = client.get(f"/api/v1/heartbeats?per_page=2&sort=name&cursor={first['meta']['next_cursor']}",
                        headers=bearer(key)).json()
    assert [h["name"] for h in second["data"]] == ["report"] and second["meta"]["next_cursor"] is None
    assert_envelope(client.get("/api/v1/heartbeats?sort=interval", headers=bearer(key)), 422, "validation_failed")
    assert_envelope(client.get("/api/v1/heartbeats?status=sleeping", headers=bearer(key)), 422, "validation_failed")
    assert_envelope(client.get("/api/v1/heartbeats?cursor=garbage", headers=bearer(key)), 422, "validation_failed")


def test_another_teams_heartbeat_is_a_404_everywhere(client: TestClient, story: Story) -> None:
    theirs = create(client, story.admin_b, name="theirs")["id"]
    base = f"/api/v1/heartbeats/{theirs}"
    calls = [("GET", base, None), ("PATCH", base, {"name": "mine now"}), ("DELETE", base, None),
             ("POST", f"{base}/pause", None), ("POST", f"{base}/resume", None), ("POST", f"{base}/rotate-token", None),
             ("GET", f"{base}/pings", None), ("GET", f"{base}/flips", None)]
    for method, path, body in calls:
        response = client.request(method, path, headers=bearer(story.admin_a), json=body)
        assert_envelope(response, 404, "heartbeat_not_found")
    assert client.get("/api/v1/heartbeats", headers=bearer(story.admin_a)).json()["data"] == []
    assert client.get(base, headers=bearer(story.admin_b)).json()["name"] == "theirs"
    # Scopes: a servers-only key reads no heartbeats; a read key writes none.
    assert_envelope(client.get("/api/v1/heartbeats", headers=bearer(story.reader_a)), 403, "missing_scope")
    reader = story.key(story.team_b, ["heartbeats:read"])
    assert client.get(base, headers=bearer(reader)).status_code == 200
    assert_envelope(client.post(f"{base}/pause", headers=bearer(reader)), 403, "missing_scope")
    assert_envelope(client.patch("/api/v1/heartbeats/ping-settings", headers=bearer(reader),
                                 json={"ping_create": True}), 403, "missing_scope")


def test_pause_and_resume_record_flips(client: TestClient, story: Story) -> None:
    key = story.admin_a
    heartbeat = create(client, key, name="job")
    path = f"/api/v1/heartbeats/{heartbeat['id']}"
    paused = client.post(f"{path}/pause", headers=bearer(key))
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert client.post(f"{path}/pause", headers=bearer(key)).json()["status"] == "paused"  # no second flip
    resumed = client.post(f"{path}/resume", headers=bearer(key))
    assert resumed.status_code == 200 and resumed.json()["status"] == "new"
    assert client.post(f"{path}/resume", headers=bearer(key)).json()["status"] == "new"  # nothing to resume
    flips = client.get(f"{path}/flips", headers=bearer(key)).json()
    assert [(f["from"], f["to"], f["cause"]) for f in flips["data"]] == [("paused", "new", "resumed"),
                                                                          ("new", "paused", "paused")]
    assert flips["meta"]["total"] == 2 and flips["data"][0]["at"].endswith("Z")


def test_rotating_the_token_changes_the_ping_url(client: TestClient, story: Story) -> None:
    heartbeat = create(client, story.admin_a, name="job")
    path = f"/api/v1/heartbeats/{heartbeat['id']}"
    with story.db.session(write=False) as session:
        old_hash = session.scalar(select(Heartbeat.ping_token_hash).where(Heartbeat.id == heartbeat["id"]))
    rotated = client.post(f"{path}/rotate-token", headers=bearer(story.admin_a))
    assert rotated.status_code == 200
    assert rotated.json()["ping_url"] != heartbeat["ping_url"]
    assert client.get(path, headers=bearer(story.admin_a)).json()["ping_url"] == rotated.json()["ping_url"]
    with story.db.session(write=False) as session:
        stored = session.get(Heartbeat, heartbeat["id"])
        assert stored is not None and stored.ping_token_hash != old_hash
        assert stored.ping_token == rotated.json()["ping_url"].rsplit("/", 1)[1]


def _ping_up(db: Database, heartbeat_id: int, at: datetime, *, late: bool = False) -> None:
    """The heartbeat as a success ping at ``at`` left it (and, with ``late``, as the worker made it late)."""
    with db.session(write=True) as session:
        heartbeat = session.get(Heartbeat, heartbeat_id)
        assert heartbeat is not None
        rules = state.rules_of(heartbeat)
        transition = machine.on_ping(rules, state.state_of(heartbeat), PingKind.SUCCESS, at)
        state.apply(session, heartbeat, transition, public_url="http://x", now=at)
        if late:
            due = heartbeat.next_due_at
            assert due is not None
            transition = machine.on_deadline(rules, state.state_of(heartbeat), due)
            state.apply(session, heartbeat, transition, public_url="http://x", now=due)


def _timing(db: Database, heartbeat_id: int) -> tuple[str, datetime | None, datetime | None]:
    with db.session(write=False) as session:
        heartbeat = session.get(Heartbeat, heartbeat_id)
        assert heartbeat is not None
        return heartbeat.status, heartbeat.next_due_at, heartbeat.deadline_at


def test_a_new_timing_reschedules_from_the_last_ping(client: TestClient, story: Story) -> None:
    key = story.admin_a
    up = create(client, key, name="up", interval=3600, grace=600)
    _ping_up(story.db, up["id"], T0)
    assert _timing(story.db, up["id"]) == ("up", T0 + timedelta(hours=1), T0 + timedelta(hours=1))
    changed = client.patch(f"/api/v1/heartbeats/{up['id']}", headers=bearer(key), json={"interval": 7200})
    assert changed.status_code == 200 and changed.json()["next_due_at"] == "2026-03-21T16:00:00Z"
    assert _timing(story.db, up["id"]) == ("up", T0 + timedelta(hours=2), T0 + timedelta(hours=2))
    # A cron schedule replaces the interval, read in its timezone (Berlin is UTC+1 in March before the change).
    cron = client.patch(f"/api/v1/heartbeats/{up['id']}", headers=bearer(key),
                        json={"schedule": "0 18 * * *", "timezone": "Europe/Berlin"}).json()
    assert (cron["interval"], cron["schedule"], cron["next_due_at"]) == (None, "0 18 * * *", "2026-03-21T17:00:00Z")

    late = create(client, key, name="late", interval=3600, grace=600)
    _ping_up(story.db, late["id"], T0, late=True)
    assert _timing(story.db, late["id"]) == ("late", T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=10))
    client.patch(f"/api/v1/heartbeats/{late['id']}", headers=bearer(key), json={"grace": 1800, "interval": 600})
    due = T0 + timedelta(minutes=10)
    assert _timing(story.db, late["id"]) == ("late", due, due + timedelta(minutes=30))

    # A name change leaves the timing alone; a new heartbeat has nothing to reschedule.
    before = _timing(story.db, up["id"])
    client.patch(f"/api/v1/heartbeats/{up['id']}", headers=bearer(key), json={"name": "renamed"})
    assert _timing(story.db, up["id"]) == before
    fresh = create(client, key, name="fresh")
    client.patch(f"/api/v1/heartbeats/{fresh['id']}", headers=bearer(key), json={"interval": 600})
    assert _timing(story.db, fresh["id"]) == ("new", None, None)


def test_patch_validates_like_create(client: TestClient, story: Story) -> None:
    key = story.admin_a
    heartbeat = create(client, key, name="job", min_runtime=60)
    taken = create(client, key, name="other")
    path = f"/api/v1/heartbeats/{heartbeat['id']}"

    def problem(body: dict[str, Any]) -> set[str]:
        error = assert_envelope(client.patch(path, headers=bearer(key), json=body), 422, "validation_failed")
        return {item["field"] for item in error["fields"]}  # type: ignore[attr-defined]

    assert problem({"interval": None}) == {"interval"}
    assert problem({"interval": 600, "schedule": "0 3 * * *"}) == {"interval", "schedule"}
    assert problem({"max_runtime": 30}) == {"max_runtime"}
    assert problem({"name": None}) == {"name"}
    assert problem({"timezone": "Nowhere/Town"}) == {"timezone"}
    assert problem({"schedule": "every day"}) == {"schedule"}
    assert_envelope(client.patch(path, headers=bearer(key), json={"slug": taken["slug"]}), 409, "slug_taken")
    changed = client.patch(path, headers=bearer(key), json={"slug": "renamed", "tags": ["a"], "manual_resume": True,
                                                            "min_runtime": None, "max_runtime": 30})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["slug"], body["tags"], body["manual_resume"], body["min_runtime"], body["max_runtime"]) == (
        "renamed", ["a"], True, None, 30)
    assert client.get("/api/v1/heartbeats?tag=a", headers=bearer(key)).json()["meta"]["total"] == 1
    assert client.patch(path, headers=bearer(key), json={"tags": []}).json()["tags"] == []
    assert client.get("/api/v1/heartbeats?tag=a", headers=bearer(key)).json()["meta"]["total"] == 0


def test_pings_and_flips_are_listed_newest_first(client: TestClient, story: Story) -> None:
    heartbeat = create(client, story.admin_a, name="job")
    path = f"/api/v1/heartbeats/{heartbeat['id']}"
    with story.db.session(write=True) as session:
        base = {"heartbeat_id": heartbeat["id"], "team_id": story.team_a, "method": "POST"}
        session.add_all([
            HeartbeatPing(**base, kind="start", at=T0, rid="r1", remote_addr="10.0.0.1", user_agent="curl/8"),
            HeartbeatPing(**base, kind="success", at=T0 + timedelta(seconds=10), rid="r1", duration_s=10.0,
                          body=b"done \xff\xfe", body_truncated=True),
            HeartbeatPing(**base, kind="fail", exit_status=3, at=T0 + timedelta(seconds=20), duration_s=30.0,
                          too_often=True),
            *[HeartbeatPing(**base, kind="success", at=T0 + timedelta(minutes=minute), duration_s=float(minute))
              for minute in range(1, 5)],
        ])
        session.add(HeartbeatFlip(heartbeat_id=heartbeat["id"], team_id=story.team_a, at=T0, from_status="new",
                                  to_status="up", cause="ping"))
    first = client.get(f"{path}/pings?per_page=5", headers=bearer(story.admin_a)).json()
    assert first["meta"]["total"] == 7 and len(first["data"]) == 5
    rest = client.get(f"{path}/pings?per_page=5&cursor={first['meta']['next_cursor']}",
                      headers=bearer(story.admin_a)).json()
    pings = first["data"] + rest["data"]
    assert [ping["kind"] for ping in pings] == ["success"] * 4 + ["fail", "success", "start"]
    failed, ended, started = pings[4:]
    assert (failed["exit_status"], failed["too_often"], failed["duration_s"]) == (3, True, 30.0)
    assert (ended["body"], ended["body_size"], ended["body_truncated"]) == ("done \ufffd\ufffd", 7, True)
    assert (started["rid"], started["remote_addr"], started["user_agent"], started["method"]) == (
        "r1", "10.0.0.1", "curl/8", "POST")
    assert started["at"] == "2026-03-21T14:00:00Z" and started["body"] == "" and started["body_size"] == 0
    only_fails = client.get(f"{path}/pings?kind=fail", headers=bearer(story.admin_a)).json()["data"]
    assert [ping["exit_status"] for ping in only_fails] == [3]
    detail = client.get(path, headers=bearer(story.admin_a)).json()
    # Durations 1, 2, 3, 4, 10, 30: nearest-rank p50 is the 3rd, p95 the 6th.
    assert detail["runs"] == {"count": 6, "p50_s": 3.0, "p95_s": 30.0} and detail["too_often_recent"] == 1
    flips = client.get(f"{path}/flips", headers=bearer(story.admin_a)).json()["data"]
    assert [(flip["from"], flip["to"], flip["cause"]) for flip in flips] == [("new", "up", "ping")]


def test_delete_removes_the_heartbeat_with_its_log(client: TestClient, story: Story) -> None:
    heartbeat = create(client, story.admin_a, name="job", tags=["x"])
    path = f"/api/v1/heartbeats/{heartbeat['id']}"
    client.post(f"{path}/pause", headers=bearer(story.admin_a))
    assert client.delete(path, headers=bearer(story.admin_a)).status_code == 204
    assert_envelope(client.get(path, headers=bearer(story.admin_a)), 404, "heartbeat_not_found")
    assert_envelope(client.delete(path, headers=bearer(story.admin_a)), 404, "heartbeat_not_found")
    with story.db.session(write=False) as session:
        assert session.scalars(select(HeartbeatFlip)).all() == []
    assert create(client, story.admin_a, name="job")["slug"] == "job"  # the slug is free again


def test_ping_settings_make_a_key_once_and_toggle_creation(client: TestClient, story: Story) -> None:
    first = client.get("/api/v1/heartbeats/ping-settings", headers=bearer(story.admin_a))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["ping_create"] is False and len(body["ping_key"]) >= 16
    assert body["slug_url_template"] == f"{public_url(client)}/heartbeat/{body['ping_key']}/<slug>"
    assert client.get("/api/v1/heartbeats/ping-settings", headers=bearer(story.admin_a)).json() == body
    other = client.get("/api/v1/heartbeats/ping-settings", headers=bearer(story.admin_b)).json()
    assert other["ping_key"] != body["ping_key"]
    changed = client.patch("/api/v1/heartbeats/ping-settings", headers=bearer(story.admin_a),
                           json={"ping_create": True})
    assert changed.status_code == 200 and changed.json() == {**body, "ping_create": True}
    assert_envelope(client.patch("/api/v1/heartbeats/ping-settings", headers=bearer(story.admin_a),
                                 json={"ping_create": "yes"}), 422, "validation_failed")
    with story.db.session(write=False) as session:
        team = session.get(Team, story.team_a)
        assert team is not None and team.ping_create is True and team.ping_key == body["ping_key"]
    # The status filter's values are the machine's.
    assert {status.value for status in HeartbeatStatus} == {"new", "up", "late", "down", "paused", "started"}
