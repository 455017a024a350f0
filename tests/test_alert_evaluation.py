"""Alert rules evaluated by the worker on a controlled clock, on SQLite with the embedded store and on PostgreSQL
with ClickHouse: for, hysteresis, no-data policies, scopes, several workers, flapping, suppression while a server
is offline, one broken rule among many, and the backtest replaying exactly what live evaluation did."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from hostatlas.alerts.evaluate import RuleEvaluation, tick_of
from hostatlas.alerts.models import AlertRule, AlertTransition
from hostatlas.app import create_app
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.jobs import SERVER_VIEWS, periodic
from hostatlas.servers.checkins import Checkin, apply_checkins
from hostatlas.servers.jobs import mark_offline
from hostatlas.settings import Settings
from hostatlas.telemetry.storage.contract import TelemetryStore
from hostatlas.worker import Worker
from tests.alert_rows import (
    T0,
    add_server,
    alert_events,
    feed,
    incident_count,
    make_rule,
    paired_store,
    rule_row,
    run,
    run_ticks,
    states,
    tick,
    transitions,
)
from tests.support import Story, bearer


@pytest.fixture
def backend(database_url: str, tmp_path: Path, request: pytest.FixtureRequest,
            settings: Settings) -> Iterator[tuple[Settings, TelemetryStore]]:
    with paired_store(database_url, tmp_path, request, settings) as paired:
        yield paired


def test_a_rule_is_pending_for_its_for_then_fires_once_and_resolves(db: Database, story: Story,
                                                                    backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    server = add_server(db, story.team_a, "web-1")
    rule = make_rule(db, story.team_a, for_s=45)
    feed(store, story.team_a, server, [50, 95, 96, 97, 98, 99, 40])
    run(db, settings, store, tick(1))
    assert states(db, rule) == {}
    run(db, settings, store, tick(2))  # 95: holds, pending
    assert states(db, rule) == {server: "pending"}
    run_ticks(db, settings, store, 3, 4)  # held 15 s, 30 s: still pending
    assert states(db, rule) == {server: "pending"} and alert_events(db) == []
    run(db, settings, store, tick(5))  # held 45 s: fires
    assert states(db, rule) == {server: "firing"}
    run(db, settings, store, tick(6))
    run(db, settings, store, tick(7))  # 40: resolves
    assert states(db, rule) == {}
    assert transitions(db, rule) == [(server, "ok", "pending", "threshold"), (server, "pending", "firing", "threshold"),
                                     (server, "firing", "ok", "recovered")]
    events = alert_events(db)
    assert [kind for kind, _ in events] == ["alert.triggered", "alert.resolved"]
    triggered = events[0][1]
    assert triggered["rule"]["id"] == rule and triggered["server"] == {"id": server, "hostname": "web-1"}
    assert triggered["value"] == 98.0 and triggered["threshold"] == 90.0 and triggered["state"] == "firing"
    assert triggered["labels"] == {} and triggered["incident_id"] is not None
    assert triggered["at"] == "2026-11-25T12:01:15Z"
    assert events[1][1]["state"] == "ok" and events[1][1]["value"] == 40.0
    assert incident_count(db, story.team_a) == 1


def test_a_condition_that_stops_holding_while_pending_goes_back_to_ok_without_an_event(
        db: Database, story: Story, backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    server = add_server(db, story.team_a, "web-1")
    rule = make_rule(db, story.team_a, for_s=60)
    feed(store, story.team_a, server, [95, 95, 20, 95])
    run_ticks(db, settings, store, 1, 4)
    assert transitions(db, rule) == [(server, "ok", "pending", "threshold"), (server, "pending", "ok", "cleared"),
                                     (server, "ok", "pending", "threshold")]
    assert alert_events(db) == [] and incident_count(db, story.team_a) == 0


def test_values_between_the_threshold_and_the_recovery_threshold_change_nothing(
        db: Database, story: Story, backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    server = add_server(db, story.team_a, "web-1")
    rule = make_rule(db, story.team_a, recovery_threshold=80.0)
    feed(store, story.team_a, server, [95, 85, 89.9, 80, 80.5, 79.9, 85])
    run_ticks(db, settings, store, 1, 5)  # 95 fires; 85, 89.9, 80 and 80.5 are between: still firing
    assert states(db, rule) == {server: "firing"}
    assert [kind for kind, _ in alert_events(db)] == ["alert.triggered"]
    run(db, settings, store, tick(6))  # 79.9: past the recovery threshold
    run(db, settings, store, tick(7))  # 85: below the threshold, ok stays ok
    assert states(db, rule) == {}
    assert [kind for kind, _ in alert_events(db)] == ["alert.triggered", "alert.resolved"]
    assert alert_events(db)[1][1]["recovery_threshold"] == 80.0


def test_the_no_data_policies(db: Database, story: Story, backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    server = add_server(db, story.team_a, "web-1")
    silent = add_server(db, story.team_a, "silent-1")
    ok = make_rule(db, story.team_a, name="ok", no_data="ok")
    alert = make_rule(db, story.team_a, name="alert", no_data="alert", for_s=15)
    keep = make_rule(db, story.team_a, name="keep", no_data="keep")
    feed(store, story.team_a, server, [95, None, None])
    run(db, settings, store, tick(1))  # web-1 fires on all three; silent-1 is pending on "alert" only
    assert states(db, ok) == {server: "firing"} and states(db, keep) == {server: "firing"}
    assert states(db, alert) == {server: "pending", silent: "pending"}
    run(db, settings, store, tick(2))  # nothing from anyone
    assert states(db, ok) == {}  # no data resolves
    assert states(db, keep) == {server: "firing"}  # no data changes nothing
    assert states(db, alert) == {server: "firing", silent: "firing"}  # no data holds
    assert transitions(db, ok)[-1] == (server, "firing", "ok", "no_data")
    assert transitions(db, alert)[-1][3] == "no_data"
    resolved = [payload for kind, payload in alert_events(db) if kind == "alert.resolved"]
    assert len(resolved) == 1 and resolved[0]["value"] is None


def test_a_silent_server_that_fired_on_no_data_resolves_when_it_sends_other_series(
        db: Database, story: Story, backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    server = add_server(db, story.team_a, "web-1")
    rule = make_rule(db, story.team_a, metric="disk.used_percent", no_data="alert")
    feed(store, story.team_a, server, [None, 10], metric="disk.used_percent", labels="mount=/")
    run_ticks(db, settings, store, 1, 2)
    assert transitions(db, rule) == [(server, "ok", "firing", "no_data"), (server, "firing", "ok", "data_returned")]


def test_scope_by_tag_covers_only_the_servers_carrying_one(db: Database, story: Story,
                                                           backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    prod = add_server(db, story.team_a, "web-prod", tags=["prod", "web"])
    staging = add_server(db, story.team_a, "web-staging", tags=["staging"])
    outsider = add_server(db, story.team_b, "other-team", tags=["prod"])
    rule = make_rule(db, story.team_a, scope="tags", tags=["prod", "db"], no_data="alert")
    for server, team in ((prod, story.team_a), (staging, story.team_a), (outsider, story.team_b)):
        feed(store, team, server, [99])
    run(db, settings, store, tick(1))
    assert states(db, rule) == {prod: "firing"}
    listed = make_rule(db, story.team_a, name="listed", scope="servers", server_ids=[staging])
    run(db, settings, store, tick(1) + timedelta(seconds=1))
    assert states(db, listed) == {staging: "firing"}


def test_a_server_that_leaves_the_scope_is_resolved(db: Database, story: Story,
                                                    backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    server = add_server(db, story.team_a, "web-1", tags=["prod"])
    rule = make_rule(db, story.team_a, scope="tags", tags=["prod"])
    feed(store, story.team_a, server, [99, 99])
    run(db, settings, store, tick(1))
    with db.session(write=True) as session:
        session.execute(update(AlertRule).where(AlertRule.id == rule).values(tags=["db"]))
    run(db, settings, store, tick(2))
    assert states(db, rule) == {}
    assert transitions(db, rule)[-1] == (server, "firing", "ok", "out_of_scope")
    assert [kind for kind, _ in alert_events(db)] == ["alert.triggered", "alert.resolved"]


def test_two_workers_at_the_same_instant_evaluate_each_rule_once(db: Database, story: Story,
                                                                  backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    servers = [add_server(db, story.team_a, f"web-{n}") for n in range(5)]
    rules = [make_rule(db, story.team_a, name=f"rule {n}", threshold=float(50 + n)) for n in range(4)]
    for server in servers:
        feed(store, story.team_a, server, [99, 10, 99, 10])
    for index in range(1, 5):
        barrier = threading.Barrier(2)
        done: list[int] = []

        def worker(barrier: threading.Barrier = barrier, index: int = index, done: list[int] = done) -> None:
            barrier.wait()
            done.append(run(db, settings, store, tick(index)))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(done) == len(servers) * len(rules), (index, done)
        assert run(db, settings, store, tick(index)) == 0  # a third, later: the lease is taken for this interval
    with db.session(write=False) as session:
        count = session.scalar(select(func.count()).select_from(Event).where(Event.type.like("alert.%")))
        stored = session.scalar(select(func.count()).select_from(AlertTransition))
    assert count == stored == 4 * len(servers) * len(rules)


def test_flapping_reopens_one_incident_instead_of_opening_one_per_flap(
        db: Database, story: Story, backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    server = add_server(db, story.team_a, "web-1")
    make_rule(db, story.team_a)
    feed(store, story.team_a, server, [99, 10, 99, 10, 99, 10])
    run_ticks(db, settings, store, 1, 6)
    assert [kind for kind, _ in alert_events(db)] == ["alert.triggered", "alert.resolved"] * 3
    assert incident_count(db, story.team_a) == 1
    assert len({payload["incident_id"] for _, payload in alert_events(db)}) == 1


def test_a_rule_firing_while_its_server_is_offline_is_attached_to_the_outage_without_an_event(
        db: Database, story: Story, backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    down = add_server(db, story.team_a, "web-down", last_seen_at=T0 - timedelta(days=1))
    up = add_server(db, story.team_a, "web-up", last_seen_at=T0 + timedelta(hours=1))
    assert mark_offline(db, settings, T0, views=SERVER_VIEWS) == 1
    rule = make_rule(db, story.team_a, metric="disk.used_percent", no_data="alert")
    feed(store, story.team_a, up, [99, 10], metric="disk.used_percent")
    run(db, settings, store, tick(1))
    assert states(db, rule) == {down: "firing", up: "firing"}
    assert sorted(transitions(db, rule)) == [(down, "ok", "firing", "suppressed: server offline"),
                                             (up, "ok", "firing", "threshold")]
    assert [payload["server"]["id"] for _, payload in alert_events(db)] == [up]
    assert incident_count(db, story.team_a) == 3  # the outage, its attached alert, the other server's alert
    with db.session(write=True) as session:
        session.execute(update(AlertRule).where(AlertRule.id == rule).values(no_data="ok"))
    run(db, settings, store, tick(2))  # both resolve: only the one that announced its firing announces this
    assert states(db, rule) == {}
    assert [(kind, payload["server"]["id"]) for kind, payload in alert_events(db)] == [
        ("alert.triggered", up), ("alert.resolved", up)]


def test_a_suppressed_alert_still_firing_when_its_server_is_back_fires_as_itself(
        db: Database, story: Story, backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    server = add_server(db, story.team_a, "web-1", last_seen_at=T0 - timedelta(days=1))
    assert mark_offline(db, settings, T0, views=SERVER_VIEWS) == 1
    rule = make_rule(db, story.team_a, no_data="alert")
    run(db, settings, store, tick(1))
    assert transitions(db, rule) == [(server, "ok", "firing", "suppressed: server offline")]
    assert alert_events(db) == []
    with db.session(write=True) as session:  # the agent checks in again
        apply_checkins(session, {server: Checkin(at=tick(1) + timedelta(seconds=5), agent_version=None,
                                                 uptime_s=None, boot_id=None)}, SERVER_VIEWS)
    run(db, settings, store, tick(2))  # still no data: firing, now as itself
    assert transitions(db, rule)[-1] == (server, "firing", "firing", "resumed: server online")
    [(kind, payload)] = alert_events(db)
    assert kind == "alert.triggered" and payload["value"] is None and payload["incident_id"] is not None
    run(db, settings, store, tick(3))
    assert len(alert_events(db)) == 1 and len(transitions(db, rule)) == 2
    with db.session(write=True) as session:
        session.execute(update(AlertRule).where(AlertRule.id == rule).values(no_data="ok"))
    run(db, settings, store, tick(4))  # and its resolution is announced like any other
    assert [kind for kind, _ in alert_events(db)] == ["alert.triggered", "alert.resolved"]


def test_one_broken_rule_does_not_keep_the_others_from_firing(db: Database, story: Story,
                                                               backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    server = add_server(db, story.team_a, "web-1")
    good_before = make_rule(db, story.team_a, name="before")
    broken = make_rule(db, story.team_a, name="broken")
    good_after = make_rule(db, story.team_a, name="after")
    with db.session(write=True) as session:  # bad stored data: an operator the machine cannot read
        session.execute(update(AlertRule).where(AlertRule.id == broken).values(operator="=>"))
    feed(store, story.team_a, server, [99, 99])
    assert run(db, settings, store, tick(1)) == 2
    assert states(db, good_before) == {server: "firing"} and states(db, good_after) == {server: "firing"}
    assert rule_row(db, broken).last_error is not None
    assert rule_row(db, good_before).last_error is None
    assert rule_row(db, broken).next_evaluation_at == tick(2)  # its lease holds: tried again next interval only
    with db.session(write=True) as session:  # mended: evaluated again at its next interval, its error cleared
        session.execute(update(AlertRule).where(AlertRule.id == broken).values(operator=">="))
    run(db, settings, store, tick(2))
    assert states(db, broken) == {server: "firing"} and rule_row(db, broken).last_error is None


def test_the_worker_runs_the_job_and_reports_a_store_that_fails_every_rule(
        db: Database, story: Story, backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    server = add_server(db, story.team_a, "web-1")
    rule = make_rule(db, story.team_a)
    feed(store, story.team_a, server, [99])
    job = dict(periodic())["alerts.evaluate"]
    assert isinstance(job, RuleEvaluation)
    worker = Worker(db, settings, [("alerts.evaluate", RuleEvaluation(store))])
    assert worker.run_once(tick(1)) == {"alerts.evaluate": 1}
    assert states(db, rule) == {server: "firing"}

    class Down:
        def aggregate_window(self, query: object) -> list[object]:
            raise ConnectionError("the store is down")

    make_rule(db, story.team_a, name="second")
    broken = Worker(db, settings, [("alerts.evaluate", RuleEvaluation(Down()))])  # type: ignore[arg-type]
    assert broken.run_once(tick(2)) == {"alerts.evaluate": -1}
    [failing] = [state for state in broken.health.snapshot() if state.name == "job:alerts.evaluate"]
    assert failing.failing_since is not None and "store is down" in (failing.last_error or "")


def test_the_evaluation_instant_is_now_floored_to_the_interval(settings: Settings) -> None:
    assert tick_of(T0 + timedelta(seconds=29), 15) == T0 + timedelta(seconds=15)
    assert tick_of(T0 + timedelta(seconds=30), 15) == T0 + timedelta(seconds=30)


def test_a_backtest_answers_the_intervals_live_evaluation_fired(
        db: Database, story: Story, backend: tuple[Settings, TelemetryStore]) -> None:
    settings, store = backend
    a = add_server(db, story.team_a, "web-a")
    b = add_server(db, story.team_a, "web-b")
    wave = [50, 92, 95, 97, 85, 91, 70, 60, 99, 99, 99, 99, 88, 79, 40, 93, 94, 95]
    feed(store, story.team_a, a, wave)
    feed(store, story.team_a, b, [value - 4 for value in wave[:10]] + [None] * 8)
    fields: dict[str, Any] = {"metric": "cpu.percent", "operator": ">", "threshold": 90.0, "recovery_threshold": 80.0,
                              "window_s": 30, "aggregation": "max", "for_s": 15, "no_data": "alert"}
    rule = make_rule(db, story.team_a, **fields)
    last = len(wave)
    run_ticks(db, settings, store, 0, last)
    with db.session(write=False) as session:
        live = [(row.server_id, row.at, row.from_state, row.to_state) for row in session.scalars(
            select(AlertTransition).where(AlertTransition.rule_id == rule).order_by(AlertTransition.id))]
    fired = {(server, at) for server, at, _, to in live if to == "firing"}
    ended = {(server, at) for server, at, was, to in live if was == "firing" and to == "ok"}
    assert fired and ended
    app = create_app(settings, db=db)
    with TestClient(app) as client:
        response = client.post("/api/v1/alert-rules/backtest", headers=bearer(story.admin_a), json={
            **fields, "from": T0.isoformat(), "to": tick(last).isoformat()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["evaluations"] == last + 1
    starts = {(interval["server"]["id"], interval["start"]) for interval in body["intervals"]}
    ends = {(interval["server"]["id"], interval["end"]) for interval in body["intervals"] if interval["end"]}
    iso = "%Y-%m-%dT%H:%M:%SZ"
    assert starts == {(server, at.strftime(iso)) for server, at in fired}
    assert ends == {(server, at.strftime(iso)) for server, at in ended}
    still = [interval for interval in body["intervals"] if interval["end"] is None]
    assert {interval["server"]["id"] for interval in still} == set(states(db, rule))
    peaks = {interval["start"]: interval["peak_value"] for interval in body["intervals"]
             if interval["server"]["id"] == a}
    assert peaks[tick(3).strftime(iso)] == 97.0  # fired at 95 (held since 92), peaked at 97 in its window
