"""``/api/v1/alert-rules``: create, read, list, edit, delete, validation, scopes, team walls, states and history,
the backtest's bounds, and the rules a new team starts with."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostatlas.alerts import service
from hostatlas.alerts.models import AlertRule
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.telemetry.storage.contract import TelemetryStore
from hostatlas.telemetry.storage.embedded import EmbeddedStore
from tests.alert_rows import T0, add_server, alert_events, feed, run, tick
from tests.support import Story, assert_envelope, bearer, hostatlas_command

pytestmark = pytest.mark.long_running(50)

BASE = "/api/v1/alert-rules"
RULE = {"name": "Disk almost full", "metric": "disk.used_percent", "label_filters": {"mount": "/"},
        "operator": ">=", "threshold": 90, "recovery_threshold": 85, "for_s": 300, "severity": "critical"}


@pytest.fixture
def store(settings: Settings) -> Iterator[TelemetryStore]:
    """The embedded store the app of ``client`` reads (settings name no ClickHouse)."""
    opened = EmbeddedStore(settings.data_dir / "telemetry.db")
    opened.migrate()
    yield opened
    opened.close()


def _create(client: TestClient, key: str, **fields: Any) -> dict[str, Any]:
    response = client.post(BASE, headers=bearer(key), json={**RULE, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _fields(response: Any) -> set[str]:
    error = assert_envelope(response, 422, "validation_failed")
    fields: list[dict[str, str]] = error["fields"]  # type: ignore[assignment]
    return {field["field"].removeprefix("body.") for field in fields}


def test_a_rule_is_created_with_defaults_and_read_back(client: TestClient, story: Story) -> None:
    created = _create(client, story.admin_a)
    assert created | {"id": 0, "created_at": "", "updated_at": ""} == {
        "id": 0, "name": "Disk almost full", "description": "", "metric": "disk.used_percent",
        "label_filters": {"mount": "/"}, "aggregation": "avg", "window_s": 300, "operator": ">=", "threshold": 90.0,
        "for_s": 300, "recovery_threshold": 85.0, "severity": "critical", "scope": "all", "server_ids": [],
        "tags": [], "no_data": "keep", "enabled": True, "last_error": None, "created_at": "", "updated_at": ""}
    fetched = client.get(f"{BASE}/{created['id']}", headers=bearer(story.admin_a))
    assert fetched.status_code == 200 and fetched.json() == created


def test_the_list_filters_and_pages(client: TestClient, story: Story) -> None:
    _create(client, story.admin_a)
    _create(client, story.admin_a, name="cpu", metric="cpu.percent", severity="warning", enabled=False,
            recovery_threshold=None)
    _create(client, story.admin_a, name="mem", metric="mem.used_percent", severity="warning")

    def names(**params: Any) -> list[str]:
        response = client.get(BASE, headers=bearer(story.admin_a), params=params)
        assert response.status_code == 200, response.text
        return [rule["name"] for rule in response.json()["data"]]

    assert names() == ["Disk almost full", "cpu", "mem"]
    assert names(enabled="false") == ["cpu"]
    assert names(severity="warning", sort="-name") == ["mem", "cpu"]
    assert names(metric="mem.used_percent") == ["mem"]
    first = client.get(BASE, headers=bearer(story.admin_a), params={"per_page": 2}).json()
    assert first["meta"]["total"] == 3 and first["meta"]["next_cursor"]
    rest = client.get(BASE, headers=bearer(story.admin_a), params={"per_page": 2,
                                                                   "cursor": first["meta"]["next_cursor"]})
    assert [rule["name"] for rule in rest.json()["data"]] == ["mem"]


@pytest.mark.parametrize(("fields", "at_fault"), [
    ({"metric": "Disk Used"}, "metric"),
    ({"window_s": 10}, "window_s"),
    ({"window_s": 86_401}, "window_s"),
    ({"for_s": -1}, "for_s"),
    ({"for_s": 86_401}, "for_s"),
    ({"recovery_threshold": 95}, "recovery_threshold"),
    ({"operator": "<", "recovery_threshold": 85}, "recovery_threshold"),
    ({"operator": "==", "recovery_threshold": 90}, "recovery_threshold"),
    ({"operator": "=>"}, "operator"),
    ({"aggregation": "median"}, "aggregation"),
    ({"threshold": "90"}, "threshold"),
    ({"scope": "tags"}, "tags"),
    ({"scope": "servers"}, "server_ids"),
    ({"server_ids": [1]}, "server_ids"),
    ({"label_filters": {"Mount": "/"}}, "label_filters.Mount"),
    ({"label_filters": {"mount": "a,b"}}, "label_filters.mount"),
    ({"no_data": "maybe"}, "no_data"),
])
def test_a_rule_that_could_not_be_evaluated_is_refused_naming_the_field(client: TestClient, story: Story,
                                                                        fields: dict[str, Any], at_fault: str) -> None:
    response = client.post(BASE, headers=bearer(story.admin_a), json={**RULE, **fields})
    found = _fields(response)
    assert any(field == at_fault or field.startswith(f"{at_fault}.") for field in found), found


def test_scope_servers_must_be_the_teams_own(client: TestClient, db: Database, story: Story) -> None:
    mine = add_server(db, story.team_a, "web-1")
    theirs = add_server(db, story.team_b, "other")
    refused = client.post(BASE, headers=bearer(story.admin_a), json={**RULE, "scope": "servers",
                                                                     "server_ids": [mine, theirs]})
    assert _fields(refused) == {"server_ids"}
    assert str(theirs) in refused.json()["error"]["fields"][0]["message"]
    made = _create(client, story.admin_a, scope="servers", server_ids=[mine, mine])
    assert made["server_ids"] == [mine]
    tagged = _create(client, story.admin_a, scope="tags", tags=["prod", "db", "prod"])
    assert tagged["tags"] == ["db", "prod"]


def test_a_rule_is_edited_and_deleted(client: TestClient, story: Story) -> None:
    rule = _create(client, story.admin_a)
    url = f"{BASE}/{rule['id']}"
    edited = client.patch(url, headers=bearer(story.admin_a), json={"threshold": 95, "recovery_threshold": None})
    assert edited.status_code == 200, edited.text
    assert edited.json()["threshold"] == 95.0 and edited.json()["recovery_threshold"] is None
    wrong_side = client.patch(url, headers=bearer(story.admin_a), json={"recovery_threshold": 99})
    assert _fields(wrong_side) == {"recovery_threshold"}
    assert _fields(client.patch(url, headers=bearer(story.admin_a), json={"name": None})) == {"name"}
    assert client.delete(url, headers=bearer(story.admin_a)).status_code == 204
    assert_envelope(client.get(url, headers=bearer(story.admin_a)), 404, "alert_rule_not_found")
    assert_envelope(client.delete(url, headers=bearer(story.admin_a)), 404, "alert_rule_not_found")


def test_scopes_guard_every_route(client: TestClient, story: Story) -> None:
    rule = _create(client, story.admin_a)
    url = f"{BASE}/{rule['id']}"
    reader = story.key(story.team_a, ["alert_rules:read"])
    assert client.get(url, headers=bearer(reader)).status_code == 200
    assert client.get(f"{url}/history", headers=bearer(reader)).status_code == 200
    assert client.get(f"{url}/states", headers=bearer(reader)).status_code == 200
    for response in (client.post(BASE, headers=bearer(reader), json=RULE),
                     client.patch(url, headers=bearer(reader), json={"threshold": 1}),
                     client.delete(url, headers=bearer(reader))):
        assert_envelope(response, 403, "missing_scope")
    for response in (client.get(BASE, headers=bearer(story.reader_a)), client.get(url, headers=bearer(story.reader_a)),
                     client.post(f"{BASE}/backtest", headers=bearer(story.reader_a),
                                 json={**RULE, "from": "2026-11-25T00:00:00Z", "to": "2026-11-25T01:00:00Z"})):
        assert_envelope(response, 403, "missing_scope")
    assert client.get(BASE).status_code == 401


def test_another_teams_rules_are_invisible(client: TestClient, story: Story) -> None:
    rule = _create(client, story.admin_a)
    url = f"{BASE}/{rule['id']}"
    outsider = bearer(story.admin_b)
    for response in (client.get(url, headers=outsider), client.patch(url, headers=outsider, json={"threshold": 1}),
                     client.delete(url, headers=outsider), client.get(f"{url}/history", headers=outsider),
                     client.get(f"{url}/states", headers=outsider)):
        assert_envelope(response, 404, "alert_rule_not_found")
    assert client.get(BASE, headers=outsider).json()["data"] == []
    assert client.get(url, headers=bearer(story.admin_a)).json()["threshold"] == 90.0


def test_states_and_history_show_what_evaluation_did(client: TestClient, db: Database, settings: Settings,
                                                     story: Story, store: TelemetryStore) -> None:
    server = add_server(db, story.team_a, "web-1")
    rule = _create(client, story.admin_a, metric="cpu.percent", label_filters={}, window_s=15, for_s=0,
                   recovery_threshold=80)
    with db.session(write=True) as session:  # made "at" T0, so the clock of the test drives it
        session.get_one(AlertRule, rule["id"]).next_evaluation_at = T0
    feed(store, story.team_a, server, [50, 95, 96], labels="core=0")
    run(db, settings, store, tick(1))
    run(db, settings, store, tick(2))
    url = f"{BASE}/{rule['id']}"
    states = client.get(f"{url}/states", headers=bearer(story.admin_a)).json()
    [firing] = states["data"]
    assert firing["server"] == {"id": server, "hostname": "web-1"} and firing["labels"] == {"core": "0"}
    assert firing["state"] == "firing" and firing["last_value"] == 95.0 and firing["suppressed"] is False
    assert firing["incident_id"] is not None and firing["since"] == "2026-11-25T12:00:30Z"
    history = client.get(f"{url}/history", headers=bearer(story.admin_a)).json()
    assert [(entry["from"], entry["to"], entry["reason"], entry["value"]) for entry in history["data"]] == [
        ("ok", "firing", "threshold", 95.0)]
    # Disabling resolves what fires: its incident and an alert.resolved, and the series is ok again.
    assert client.patch(url, headers=bearer(story.admin_a), json={"enabled": False}).status_code == 200
    assert client.get(f"{url}/states", headers=bearer(story.admin_a)).json()["data"] == []
    history = client.get(f"{url}/history", headers=bearer(story.admin_a)).json()
    assert history["data"][0]["reason"] == "disabled" and history["meta"]["total"] == 2
    assert [kind for kind, _ in alert_events(db)] == ["alert.triggered", "alert.resolved"]
    # Enabled again it fires again; deleted while firing, it is resolved first.
    assert client.patch(url, headers=bearer(story.admin_a), json={"enabled": True}).status_code == 200
    with db.session(write=True) as session:
        session.get_one(AlertRule, rule["id"]).next_evaluation_at = T0
    run(db, settings, store, tick(3))
    assert client.get(f"{url}/states", headers=bearer(story.admin_a)).json()["meta"]["total"] == 1
    assert client.delete(url, headers=bearer(story.admin_a)).status_code == 204
    assert [kind for kind, _ in alert_events(db)] == ["alert.triggered", "alert.resolved"] * 2


def test_the_backtest_is_bounded(client: TestClient, story: Story) -> None:
    def backtest(start: str, end: str, **fields: Any) -> Any:
        return client.post(f"{BASE}/backtest", headers=bearer(story.admin_a),
                           json={**RULE, **fields, "from": start, "to": end})

    empty = backtest("2026-11-25T00:00:00Z", "2026-11-25T01:00:00Z")
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"intervals": [], "evaluations": 241}
    assert _fields(backtest("2026-11-25T00:00:00Z", "2026-11-27T00:00:00Z")) == {"to"}
    assert _fields(backtest("2026-11-25T01:00:00Z", "2026-11-25T00:00:00Z")) == {"to"}
    assert _fields(backtest("2026-11-25T00:00:00Z", "2026-11-25T01:00:00Z", window_s=5)) == {"window_s"}
    assert "from" in _fields(client.post(f"{BASE}/backtest", headers=bearer(story.admin_a), json=RULE))


def test_a_new_team_starts_with_the_default_rules(client: TestClient, db: Database, story: Story) -> None:
    with db.session(write=True) as session:
        service.create_default_rules(session, story.team_b, now=T0)
    rules = client.get(BASE, headers=bearer(story.admin_b)).json()["data"]
    assert [(rule["metric"], rule["operator"], rule["threshold"], rule["for_s"], rule["severity"], rule["window_s"],
             rule["aggregation"], rule["scope"]) for rule in rules] == [
        ("disk.used_percent", ">=", 90.0, 300, "critical", 300, "avg", "all"),
        ("mem.used_percent", ">=", 95.0, 600, "warning", 300, "avg", "all"),
        ("cpu.percent", ">=", 95.0, 900, "warning", 300, "avg", "all")]
    assert client.get(BASE, headers=bearer(story.admin_a)).json()["data"] == []  # the teams before get none
    first = rules[0]["id"]
    assert client.delete(f"{BASE}/{first}", headers=bearer(story.admin_b)).status_code == 204


def test_the_team_create_command_makes_the_default_rules(tmp_path: Path) -> None:
    made = subprocess.run([*hostatlas_command(), "team", "create", "acme"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(tmp_path / "hostatlas-data" / "hostatlas.db") as connection:
        rows = connection.execute("SELECT t.slug, r.metric FROM alert_rules r JOIN teams t ON t.id = r.team_id "
                                  "ORDER BY r.id").fetchall()
    # The default team, made with the schema on a fresh install, got them from migration 0010.
    assert rows == [(team, metric) for team in ("default", "acme")
                    for metric in ("disk.used_percent", "mem.used_percent", "cpu.percent")]


def test_every_rule_lookup_is_scoped_by_team(db: Database, story: Story) -> None:
    with db.session(write=True) as session:
        rule = service.create_rule(session, team_id=story.team_a, fields=RULE, now=T0)
        assert session.scalar(select(AlertRule.id).where(AlertRule.id == rule.id)) == rule.id
        with pytest.raises(Exception, match="not found"):
            service.get_rule(session, team_id=story.team_b, rule_id=rule.id)
