"""Crash reports (POST /api/v1/agent/incidents): a key opens an incident, follows it up with what the agent
captured, resolves it; bounded input; team walls; a report while its server is offline joins the outage."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostatlas.clock import isoformat_z, utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.jobs import SERVER_VIEWS
from hostatlas.servers.jobs import mark_offline
from hostatlas.settings import Settings
from tests.support import Story, assert_envelope, bearer, enrol, get_ok

CRASH = "/api/v1/agent/incidents"


def _report(**fields: Any) -> dict[str, Any]:
    return {"key": "nginx-crash", "service": "nginx", "title": "nginx process stopped", "severity": "critical",
            "detected_at": "2026-03-21T14:28:41Z",
            "logs": ["[emerg] bind() to 0.0.0.0:443 failed (98: Address already in use)"],
            "metrics": {"cpu.percent": 12.5}, "state": {"unit": "failed", "exit_status": 1}, "resolved": False,
            **fields}


def _post(client: TestClient, token: str, body: Any) -> httpx.Response:
    response: httpx.Response = client.post(CRASH, headers=bearer(token), json=body)
    return response


def _incident_events(db: Database, incident_id: int) -> list[str]:
    with db.session(write=False) as session:
        return [event.type for event in session.scalars(select(Event).where(
            Event.resource_type == "incident", Event.resource_id == incident_id).order_by(Event.id))]


def test_a_first_report_opens_an_incident_and_the_same_key_appends_what_the_agent_captured(
        client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    client.post("/api/v1/agent/check-in", headers=bearer(token), json={})  # the token is cached: fast path armed
    opened = _post(client, token, _report())
    assert opened.status_code == 201, opened.text
    first = opened.json()
    assert first["opened"] is True and first["status"] == "open"
    incident_id = first["incident_id"]

    again = _post(client, token, _report(logs=["worker 812 exited on signal 11"], metrics={"mem.used_percent": 97},
                                         state={"unit": "activating"}, detected_at="2026-03-21T14:29:41Z"))
    assert again.status_code == 200, again.text
    assert again.json() == {"incident_id": incident_id, "status": "open", "opened": False}

    detail = get_ok(client, story.admin_a, f"/api/v1/incidents/{incident_id}")
    assert detail["type"] == "automatic" and detail["source"] == "crash" and detail["severity"] == "critical"
    assert detail["server"] == {"id": server_id, "hostname": "web-prod-01"} and detail["service"] == "nginx"
    assert detail["title"] == "nginx process stopped"
    assert detail["detected_at"] == "2026-03-21T14:28:41Z"
    entries = detail["timeline"]
    assert [entry["kind"] for entry in entries] == ["opened", "follow_up"]
    assert entries[0]["data"] == {"logs": _report()["logs"], "metrics": {"cpu.percent": 12.5},
                                  "state": {"unit": "failed", "exit_status": 1},
                                  "detected_at": "2026-03-21T14:28:41Z"}
    assert entries[1]["data"]["logs"] == ["worker 812 exited on signal 11"]
    assert entries[1]["data"]["metrics"] == {"mem.used_percent": 97}
    assert entries[1]["data"]["state"] == {"unit": "activating"} and entries[0]["actor"] == "agent"


def test_resolved_true_resolves_it_once_and_a_new_key_opens_another(client: TestClient, db: Database,
                                                                   story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    incident_id = _post(client, token, _report()).json()["incident_id"]
    other = _post(client, token, _report(key="php-fpm-oom", service="php-fpm", title="php-fpm killed (OOM)"))
    assert other.status_code == 201 and other.json()["incident_id"] != incident_id

    done = _post(client, token, {"key": "nginx-crash", "resolved": True, "logs": ["nginx started"]})
    assert done.status_code == 200, done.text
    assert done.json() == {"incident_id": incident_id, "status": "resolved", "opened": False}
    detail = get_ok(client, story.admin_a, f"/api/v1/incidents/{incident_id}")
    assert detail["status"] == "resolved" and detail["resolved_by"] == "agent"
    assert detail["timeline"][-1]["kind"] == "resolved"
    assert detail["timeline"][-1]["data"]["logs"] == ["nginx started"]
    # Resolving again, or a key that never opened anything: accepted, and nothing happens.
    for key in ("nginx-crash", "never-reported"):
        assert _post(client, token, {"key": key, "resolved": True}).json() == {
            "incident_id": None, "status": None, "opened": False}
    assert _incident_events(db, incident_id) == ["incident.created", "incident.resolved"]
    assert get_ok(client, story.admin_a, f"/api/v1/incidents/{other.json()['incident_id']}")["status"] == "open"


def test_a_title_may_be_left_out_and_detected_at_in_the_future_is_now(client: TestClient, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    future = (utcnow() + timedelta(days=3)).isoformat()
    body = _post(client, token, {"key": "redis", "service": "redis", "detected_at": future}).json()
    detail = get_ok(client, story.admin_a, f"/api/v1/incidents/{body['incident_id']}")
    assert detail["title"] == "redis crashed" and detail["severity"] == "critical"
    assert detail["detected_at"] <= isoformat_z(utcnow())


BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "too many lines": ({"logs": ["x"] * 1001}, "logs"),
    "a line too long": ({"logs": ["ok", "é" * 4097]}, "logs[1]"),
    "metrics too large": ({"metrics": {"blob": "x" * 70_000}}, "metrics"),
    "state too deep": ({"state": json.loads('{"a":' * 40 + "1" + "}" * 40)}, "state"),
    "NUL in the title": ({"title": "nginx\x00"}, "title"),
    "NUL in a log line": ({"logs": ["a\x00b"]}, "logs[0]"),
    "NUL in a state key": ({"state": {"k\x00": 1}}, "state"),
    "a key too long": ({"key": "k" * 129}, "key"),
    "an empty key": ({"key": ""}, "key"),
    "an unknown severity": ({"severity": "apocalyptic"}, "severity"),
    "a moment in 1960": ({"detected_at": "1960-01-01T00:00:00Z"}, "detected_at"),
    "a number as the moment": ({"detected_at": 1711031281}, "detected_at"),
    "metrics not an object": ({"metrics": [1, 2]}, "metrics"),
    "resolved as 1": ({"resolved": 1}, "resolved"),
}


@pytest.mark.parametrize("case", BAD_BODIES, ids=list(BAD_BODIES))
def test_bad_reports_are_422_naming_the_field(client: TestClient, story: Story, case: str) -> None:
    _, token = enrol(client, story.admin_a)
    fields, named = BAD_BODIES[case]
    error = assert_envelope(_post(client, token, _report(**fields)), 422, "validation_failed")
    assert named in {field["field"] for field in error["fields"]}  # type: ignore[attr-defined]


def test_a_body_past_the_cap_is_413_and_the_limits_themselves_pass(client: TestClient, settings: Settings,
                                                                 story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    huge = _report(logs=["x" * 8000] * 200)  # 1.6 MB: every line is fine, the body is not
    assert len(json.dumps(huge)) > settings.max_body_bytes
    assert_envelope(_post(client, token, huge), 413, "payload_too_large")
    at_limits = _report(logs=["y" * 8192] * 100 + ["z"] * 900, metrics={"blob": "m" * 65_000})
    assert _post(client, token, at_limits).status_code == 201


def test_an_agent_reaches_only_its_own_servers_incidents(client: TestClient, db: Database, story: Story) -> None:
    _, token_a = enrol(client, story.admin_a)
    _, token_b = enrol(client, story.admin_b, machine_id="m-b", hostname="b-host")
    _, other_a = enrol(client, story.admin_a, machine_id="m-a2", hostname="web-prod-02")
    mine = _post(client, token_a, _report()).json()["incident_id"]
    # The same key from another team's agent, or another server of the same team: incidents of their own.
    theirs = _post(client, token_b, _report()).json()
    sibling = _post(client, other_a, _report()).json()
    assert theirs["opened"] and sibling["opened"] and len({mine, theirs["incident_id"], sibling["incident_id"]}) == 3
    assert _post(client, token_b, {"key": "nginx-crash", "resolved": True}).json()["incident_id"] == \
        theirs["incident_id"]
    assert get_ok(client, story.admin_a, f"/api/v1/incidents/{mine}")["status"] == "open"
    assert_envelope(client.get(f"/api/v1/incidents/{mine}", headers=bearer(story.admin_b)), 404,
                    "incident_not_found")
    # API keys are not agent tokens.
    assert_envelope(client.post(CRASH, headers=bearer(story.admin_a), json=_report()), 401, "wrong_token_type")
    assert_envelope(client.post(CRASH, json=_report()), 401, "missing_agent_token")


def test_a_report_while_its_server_is_offline_joins_the_outage_and_sends_no_event(
        client: TestClient, db: Database, settings: Settings, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    later = utcnow() + timedelta(seconds=settings.offline_after + settings.flush_interval + 10)
    assert mark_offline(db, settings, later, views=SERVER_VIEWS) == 1
    [outage] = get_ok(client, story.admin_a, "/api/v1/incidents", status="open")["data"]
    assert outage["source"] == "server" and outage["server"]["id"] == server_id

    crash = _post(client, token, _report()).json()
    assert crash["opened"] is True and crash["incident_id"] != outage["id"]
    detail = get_ok(client, story.admin_a, f"/api/v1/incidents/{crash['incident_id']}")
    assert detail["parent_id"] == outage["id"]
    assert _incident_events(db, crash["incident_id"]) == []  # the outage's incident speaks for it
    assert [entry["kind"] for entry in get_ok(client, story.admin_a, f"/api/v1/incidents/{outage['id']}")
            ["timeline"]][-1] == "attached"
