"""Dependency-aware alerting, end to end (issue 13's acceptance): a server goes offline while its nginx crash report
and a disk rule are active, and HostAtlas shows one incident (the server's) with the others attached; what happens
during the outage is attached too and announced by no event of its own; after recovery new problems open their own
incidents again. Driven through the agent API, the REST API and the worker, on SQLite with the embedded telemetry
store and on PostgreSQL with ClickHouse."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostatlas.app import create_app
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.http import runtime
from hostatlas.jobs import periodic
from hostatlas.servers.checkins import CheckinBuffer
from hostatlas.settings import Settings
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.worker import Worker
from tests.alert_rows import paired_store
from tests.support import Story, bearer, enrol, wait_until


@pytest.fixture
def watched(database_url: str, tmp_path: Path, request: pytest.FixtureRequest, settings: Settings,
            db: Database) -> Iterator[tuple[TestClient, Settings]]:
    """The app on the telemetry store of its database's pair, a server silent for 300 s going offline."""
    with paired_store(database_url, tmp_path, request, settings) as (paired, _store):
        fast = paired.model_copy(update={"offline_after": 300, "flush_interval": 1})
        with TestClient(create_app(fast, db=db), raise_server_exceptions=False) as client:
            yield client, fast


def _crash(client: TestClient, token: str, service: str, **fields: Any) -> dict[str, Any]:
    body = {"key": f"{service}-down", "service": service, "title": f"{service} process stopped",
            "severity": "critical", "logs": [f"{service}: exited with status 1"], **fields}
    answer = client.post("/api/v1/agent/incidents", headers=bearer(token), json=body)
    assert answer.status_code in (200, 201), answer.text
    result: dict[str, Any] = answer.json()
    return result


def _incident_events(db: Database) -> list[tuple[str, int | None]]:
    with db.session(write=False) as session:
        return [(event.type, event.resource_id) for event in session.scalars(
            select(Event).where(Event.type.like("incident.%")).order_by(Event.id))]


def _events_of(db: Database, prefix: str) -> list[str]:
    with db.session(write=False) as session:
        return list(session.scalars(select(Event.type).where(Event.type.like(f"{prefix}%")).order_by(Event.id)))


def test_an_offline_server_is_one_incident_with_its_problems_attached(
        watched: tuple[TestClient, Settings], db: Database, story: Story) -> None:
    client, settings = watched
    admin = bearer(story.admin_a)
    server_id, token = enrol(client, story.admin_a)
    worker = Worker(db, settings, periodic())

    # Active before the outage: a disk rule firing on / and nginx's crash report, each its own announced incident.
    rule = client.post("/api/v1/alert-rules", headers=admin, json={
        "name": "Root disk full", "metric": "disk.used_percent", "label_filters": {"mount": "/"},
        "aggregation": "max", "window_s": 300, "operator": ">=", "threshold": 90, "severity": "critical"})
    assert rule.status_code == 201, rule.text
    start = utcnow()
    points = [[int(start.timestamp()) - 20, 97.0]]
    sent = client.post("/api/v1/agent/metrics", headers=bearer(token),
                       json={"series": [{"metric": "disk.used_percent", "labels": {"mount": "/"}, "points": points}]})
    assert sent.status_code == 200, sent.text
    runtime.of(client.app).part(Telemetry).caught_up()
    assert worker.run_once(start)["alerts.evaluate"] == 1
    nginx = _crash(client, token, "nginx")
    assert nginx["opened"] is True
    open_before = {row["id"] for row in _list(client, admin, server_id)}
    assert len(open_before) == 2 and nginx["incident_id"] in open_before
    assert _events_of(db, "alert.") == ["alert.triggered"]

    # The server goes silent: its outage is the one incident shown, the two others attached to it.
    offline_at = start + timedelta(seconds=settings.offline_after + 60)
    assert worker.run_once(offline_at)["servers.mark_offline"] == 1
    [outage] = _list(client, admin, server_id)
    assert outage["source"] == "server" and outage["severity"] == "critical" and outage["attached_count"] == 2
    detail = client.get(f"/api/v1/incidents/{outage['id']}", headers=admin).json()
    assert {row["id"] for row in detail["attached"]} == open_before
    everything = client.get("/api/v1/incidents", headers=admin,
                            params={"server_id": server_id, "include_attached": "true", "status": "open"}).json()
    assert {row["id"] for row in everything["data"]} == open_before | {outage["id"]}

    # During the outage: redis crashes and the disk rule keeps evaluating (its window has no data: kept firing).
    # Both are attached, and nothing is announced but the outage itself.
    before = _incident_events(db)
    redis = _crash(client, token, "redis")
    assert redis["opened"] is True
    assert worker.run_once(offline_at + timedelta(seconds=15))["alerts.evaluate"] == 0
    assert _incident_events(db) == before
    assert _events_of(db, "alert.") == ["alert.triggered"]
    assert [row["id"] for row in _list(client, admin, server_id)] == [outage["id"]]

    # Back online: the outage resolves; what is still wrong is shown on its own again, and redis, never announced,
    # is announced now (the problem outlived the outage).
    assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 200
    runtime.of(client.app).part(CheckinBuffer).flush(db)
    # The app's own flush loop may have taken the check-in first and be committing it right now.
    wait_until(lambda: client.get(f"/api/v1/incidents/{outage['id']}", headers=admin).json()["status"] == "resolved",
               timeout=10, what="the outage resolved by the check-in")
    assert {row["id"] for row in _list(client, admin, server_id)} == open_before | {redis["incident_id"]}
    after = _incident_events(db)[len(before):]
    assert sorted(after) == sorted([("incident.resolved", outage["id"]), ("incident.created", redis["incident_id"])])

    # New problems open their own incidents again, announced.
    postgres = _crash(client, token, "postgresql")
    assert postgres["opened"] is True
    assert ("incident.created", postgres["incident_id"]) in _incident_events(db)
    assert postgres["incident_id"] in {row["id"] for row in _list(client, admin, server_id)}


def _list(client: TestClient, admin: dict[str, str], server_id: int) -> list[dict[str, Any]]:
    """The server's unresolved incidents as the list shows them (attached ones hidden)."""
    rows: list[dict[str, Any]] = []
    for status in ("open", "acknowledged"):
        answer = client.get("/api/v1/incidents", headers=admin, params={"server_id": server_id, "status": status})
        assert answer.status_code == 200, answer.text
        rows += answer.json()["data"]
    return rows


def test_nothing_is_attached_to_a_server_that_is_up(watched: tuple[TestClient, Settings], db: Database,
                                                    story: Story) -> None:
    client, _settings = watched
    _server_id, token = enrol(client, story.admin_a)
    crashed = _crash(client, token, "nginx", detected_at=(utcnow() - timedelta(minutes=1)).isoformat())
    shown = client.get(f"/api/v1/incidents/{crashed['incident_id']}", headers=bearer(story.admin_a)).json()
    assert shown["parent_id"] is None and shown["type"] == "automatic" and shown["service"] == "nginx"
    assert _incident_events(db) == [("incident.created", crashed["incident_id"])]

