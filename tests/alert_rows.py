"""Helpers of the alert tests: servers, metrics on a 15 s grid, rules, and what evaluation stored."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hostatlas.alerts import service
from hostatlas.alerts.evaluate import evaluate_rules
from hostatlas.alerts.models import AlertRule, AlertState, AlertTransition
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.incidents.models import Incident
from hostatlas.servers.models import Server, ServerTag
from hostatlas.settings import Settings
from hostatlas.telemetry.storage.contract import MetricPoint, TelemetryStore

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # on the 15 s grid
STEP = 15


@contextmanager
def paired_store(database_url: str, tmp_path: Path, request: pytest.FixtureRequest,
                 settings: Settings) -> Iterator[tuple[Settings, TelemetryStore]]:
    """SQLite with the embedded store, PostgreSQL with ClickHouse; settings that open that very store."""
    store: TelemetryStore
    if database_url.startswith("sqlite"):
        from hostatlas.telemetry.storage.embedded import EmbeddedStore

        store = EmbeddedStore(tmp_path / "telemetry.db")
        paired = settings.model_copy(update={"data_dir": tmp_path, "clickhouse_url": None})
    else:
        from hostatlas.telemetry.storage.clickhouse import ClickHouseStore

        url = str(request.getfixturevalue("clickhouse_db_url"))
        store = ClickHouseStore(url)
        paired = settings.model_copy(update={"clickhouse_url": url})
    store.migrate()
    try:
        yield paired, store
    finally:
        store.close()


def add_server(db: Database, team_id: int, hostname: str, *, tags: Sequence[str] = (),
               last_seen_at: datetime = T0) -> int:
    with db.session(write=True) as session:
        server = Server(team_id=team_id, machine_id=f"m-{hostname}", hostname=hostname, tags=sorted(tags),
                        last_seen_at=last_seen_at, created_at=last_seen_at)
        session.add(server)
        session.flush()
        session.add_all(ServerTag(server_id=server.id, tag=tag, team_id=team_id) for tag in tags)
        return server.id


def feed(store: TelemetryStore, team_id: int, server_id: int, values: Sequence[float | None], *,
         metric: str = "cpu.percent", labels: str = "", start: datetime = T0) -> None:
    """One point every 15 s, 5 s into each step: the window ``[t - 15, t)`` of the tick t = start + 15 (i + 1)
    holds exactly ``values[i]`` (None: no point in that step)."""
    base = int(start.timestamp())
    points = [MetricPoint(team_id, server_id, metric, labels, base + STEP * index + 5, float(value))
              for index, value in enumerate(values) if value is not None]
    if points:
        store.insert_metrics(points)


def tick(index: int, start: datetime = T0) -> datetime:
    """The tick whose 15 s window holds ``values[index - 1]`` of ``feed``."""
    return start + timedelta(seconds=STEP * index)


def make_rule(db: Database, team_id: int, *, now: datetime = T0, **fields: Any) -> int:
    values = {"name": "cpu hot", "metric": "cpu.percent", "operator": ">=", "threshold": 90.0, "window_s": 15,
              **fields}
    with db.session(write=True) as session:
        return service.create_rule(session, team_id=team_id, fields=values, now=now).id


def run(db: Database, settings: Settings, store: TelemetryStore, at: datetime) -> int:
    return evaluate_rules(db, settings, at, store=store)


def run_ticks(db: Database, settings: Settings, store: TelemetryStore, first: int, last: int,
              start: datetime = T0) -> None:
    for index in range(first, last + 1):
        run(db, settings, store, tick(index, start))


def transitions(db: Database, rule_id: int) -> list[tuple[int, str, str, str]]:
    """(server id, from, to, reason) in order."""
    with db.session(write=False) as session:
        return [(row.server_id, row.from_state, row.to_state, row.reason) for row in session.scalars(
            select(AlertTransition).where(AlertTransition.rule_id == rule_id).order_by(AlertTransition.id))]


def states(db: Database, rule_id: int) -> dict[int, str]:
    with db.session(write=False) as session:
        return {row.server_id: row.state for row in session.scalars(
            select(AlertState).where(AlertState.rule_id == rule_id))}


def alert_events(db: Database) -> list[tuple[str, dict[str, Any]]]:
    with db.session(write=False) as session:
        return [(event.type, event.payload) for event in session.scalars(
            select(Event).where(Event.type.like("alert.%")).order_by(Event.id))]


def incident_count(db: Database, team_id: int) -> int:
    with db.session(write=False) as session:
        return session.scalar(select(func.count()).select_from(Incident).where(Incident.team_id == team_id)) or 0


def rule_row(db: Database, rule_id: int) -> AlertRule:
    with db.session(write=False) as session:
        rule = session.get_one(AlertRule, rule_id)
        session.expunge(rule)
        return rule
