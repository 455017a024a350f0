"""A stuck pipeline is visible: /readyz turns 503 with the reason and back, /metrics shows the figures.

Each cause is made real where it can be: an item set aside in the quarantine, a telemetry store locked
by another connection, a check-in flush that fails because its table is gone.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from hostatlas.app import create_app, flush_buffers
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.http import runtime
from hostatlas.pipelines import quarantine
from hostatlas.settings import Settings
from tests.support import Story, bearer, enrol, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _eventually(probe: Callable[[], bool], timeout: float = 10.0) -> None:
    wait_until(probe, timeout=timeout)


def _samples(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def _sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _readiness(client: TestClient) -> tuple[int, dict[str, object]]:
    response = client.get("/readyz")
    return response.status_code, response.json()


@contextmanager
def _app(db: Database, settings: Settings, **overrides: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update=overrides), db=db)) as client:
        yield client


def test_a_fresh_install_is_ready_on_every_check(client: TestClient) -> None:
    status, body = _readiness(client)
    assert status == 200
    assert body == {"status": "ok", "database": "ok", "quarantine": "ok", "pipelines": "ok", "telemetry": "ok",
                    "reasons": []}


def test_an_item_in_the_quarantine_degrades_readiness_until_it_is_dropped(client: TestClient, db: Database) -> None:
    item = quarantine.set_aside_now(db, pipeline="telemetry.metrics", reason="ValueError: 401 digits",
                                    payload=b"{}", team_id=None, now=utcnow())
    status, body = _readiness(client)
    assert status == 503 and body["status"] == "degraded" and body["quarantine"] == "items"
    assert body["reasons"] == ["1 item(s) of pipeline telemetry.metrics wait in the quarantine: "
                               "`hostatlas quarantine list` shows them"]
    assert _sample(_samples(client), "hostatlas_quarantined_items", pipeline="telemetry.metrics") == 1

    quarantine.drop(db, item)
    assert _readiness(client)[0] == 200
    assert _samples(client).get(("hostatlas_quarantined_items", frozenset({("pipeline", "telemetry.metrics")})),
                                0) == 0


def test_a_failing_checkin_flush_degrades_readiness_past_the_threshold_and_recovers(
        db: Database, settings: Settings, story: Story) -> None:
    with _app(db, settings, ready_stuck_after=0.3) as client:
        tokens = [enrol(client, story.admin_a, machine_id=f"m-{n}", hostname=f"h-{n}")[1] for n in range(3)]
        for token in tokens:
            assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={"uptime_s": 5}).status_code == 200
        with db.session(write=True) as session:  # the real fault: the flush's table is gone
            session.execute(text("ALTER TABLE servers RENAME TO servers_away"))
        try:
            flush_buffers(runtime.of(client.app))
            _eventually(lambda: _readiness(client)[0] == 503)
            status, body = _readiness(client)
            assert body["pipelines"] == "stuck"
            assert any(reason.startswith("pipeline servers.checkins has been failing for")
                       for reason in body["reasons"]), body  # type: ignore[attr-defined]
            samples = _samples(client)
            assert _sample(samples, "hostatlas_pipeline_failures_total", pipeline="servers.checkins") >= 1
            assert _sample(samples, "hostatlas_pipeline_failing_seconds", pipeline="servers.checkins") >= 0.3
        finally:
            with db.session(write=True) as session:
                session.execute(text("ALTER TABLE servers_away RENAME TO servers"))
        flush_buffers(runtime.of(client.app))
        assert _readiness(client) == (200, {"status": "ok", "database": "ok", "quarantine": "ok",
                                            "pipelines": "ok", "telemetry": "ok", "reasons": []})
        samples = _samples(client)
        assert _sample(samples, "hostatlas_pipeline_successes_total", pipeline="servers.checkins") >= 1
        assert _sample(samples, "hostatlas_pipeline_failing_seconds", pipeline="servers.checkins") == 0


def test_telemetry_stuck_behind_a_locked_store_degrades_readiness_until_it_catches_up(
        db: Database, settings: Settings, story: Story) -> None:
    if db.dialect != "sqlite":
        pytest.skip("the embedded telemetry store is the same on both backends")
    with _app(db, settings, ready_stuck_after=0.5, telemetry_batch_delay=0.05) as client:
        _, token = enrol(client, story.admin_a)
        blocker = sqlite3.connect(settings.data_dir / "telemetry.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # the storer's INSERT now waits for the lock
        try:
            batch = {"series": [{"metric": "cpu.percent", "labels": {}, "points": [[int(time.time()), 12.5]]}]}
            answer = client.post("/api/v1/agent/metrics", headers=bearer(token), json=batch)
            assert answer.status_code == 200 and answer.json()["accepted"] == 1
            _eventually(lambda: _readiness(client)[0] == 503)
            body = _readiness(client)[1]
            assert body["telemetry"] == "stuck"
            assert any(reason.startswith("telemetry storage is stuck")
                       for reason in body["reasons"]), body  # type: ignore[attr-defined]
            samples = _samples(client)
            assert _sample(samples, "hostatlas_telemetry_backlog_bytes") > 0
            assert _sample(samples, "hostatlas_telemetry_backlog_segments") >= 1
            assert _sample(samples, "hostatlas_telemetry_backlog_oldest_age_seconds") > 0.5
            assert _sample(samples, "hostatlas_telemetry_storer_lag_seconds") >= 0
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        _eventually(lambda: _readiness(client)[0] == 200)
        assert _sample(_samples(client), "hostatlas_telemetry_backlog_segments") == 0


def test_the_database_going_away_is_a_reason_and_costs_the_scrape_only_its_figures(settings: Settings) -> None:
    gone = settings.model_copy(update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    with TestClient(create_app(gone)) as client:
        status, body = _readiness(client)
        samples = _samples(client)
    assert status == 503 and body["database"] == "unreachable" and body["quarantine"] == "unknown"
    assert body["reasons"] == ["the database does not answer (OperationalError)"]
    assert _sample(samples, "hostatlas_database_up") == 0
    assert _sample(samples, "hostatlas_telemetry_backlog_segments") == 0
    assert _sample(samples, "hostatlas_http_requests_total", method="GET", route="/readyz", status="5xx") == 1


def test_requests_are_counted_by_route_template_method_and_status_class(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    assert client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).status_code == 200
    assert client.get("/api/v1/servers/999999", headers=bearer(story.admin_a)).status_code == 404
    assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={"uptime_s": 1}).status_code == 200
    assert client.get("/no/such/page").status_code == 404
    assert client.request("BREW", "/api/v1/servers").status_code == 405

    samples = _samples(client)
    for labels, count in ((("GET", "/api/v1/servers/{server_id}", "2xx"), 1),
                          (("GET", "/api/v1/servers/{server_id}", "4xx"), 1),
                          (("POST", "/api/v1/agent/register", "2xx"), 1),
                          (("POST", "/api/v1/agent/check-in", "2xx"), 1),  # answered by the fast path
                          (("GET", "unmatched", "4xx"), 1),
                          (("OTHER", "/api/v1/servers", "4xx"), 1)):
        method, route, status = labels
        assert _sample(samples, "hostatlas_http_requests_total", method=method, route=route, status=status) == count
        assert _sample(samples, "hostatlas_http_request_duration_seconds_count", method=method, route=route,
                       status=status) == count
        assert _sample(samples, "hostatlas_http_request_duration_seconds_bucket", method=method, route=route,
                       status=status, le="+Inf") == count
        assert _sample(samples, "hostatlas_http_request_duration_seconds_sum", method=method, route=route,
                       status=status) > 0


def test_pending_webhook_deliveries_are_the_queue_depth(db: Database, settings: Settings, story: Story) -> None:
    with _app(db, settings, webhook_allow_private=True) as client:
        assert _sample(_samples(client), "hostatlas_queue_depth", queue="webhook_deliveries") == 0
        created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a),
                              json={"url": "http://127.0.0.1:9/hook", "events": ["server.offline"]})
        assert created.status_code == 201, created.text
        for _ in range(2):
            sent = client.post(f"/api/v1/webhooks/{created.json()['id']}/test", headers=bearer(story.admin_a))
            assert sent.status_code == 202
        samples = _samples(client)
    assert _sample(samples, "hostatlas_queue_depth", queue="webhook_deliveries") == 2
    assert _sample(samples, "hostatlas_database_up") == 1


def test_the_exposition_can_be_moved_or_turned_off(db: Database, settings: Settings) -> None:
    with _app(db, settings, metrics_path="/internal/prometheus") as client:
        assert client.get("/metrics").status_code == 404
        assert "hostatlas_database_up 1.0" in client.get("/internal/prometheus").text
    with _app(db, settings, metrics_enabled=False) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/readyz").status_code == 200
