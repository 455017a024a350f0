"""Background jobs: one bad row never stops a job, and every job's health is visible."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from hostatlas.app import create_app
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.inventory.service import server_views
from hostatlas.jobs import periodic, replayers
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.health import PipelineHealth
from hostatlas.servers.jobs import mark_offline
from hostatlas.servers.models import Server
from hostatlas.settings import Settings
from hostatlas.worker import Worker
from tests.support import Story, enrol


def _offline_events(db: Database) -> list[int | None]:
    with db.session(write=False) as session:
        return sorted(session.scalars(select(Event.server_id).where(Event.type == "server.offline")))


def _status(db: Database, server_id: int) -> str:
    with db.session(write=False) as session:
        return session.get_one(Server, server_id).status


def test_a_server_whose_event_cannot_be_built_never_keeps_the_others_online(db: Database, settings: Settings,
                                                                            story: Story) -> None:
    with TestClient(create_app(settings, db=db)) as client:
        broken = enrol(client, story.admin_a, machine_id="m-broken")[0]
        others = [enrol(client, story.admin_a, machine_id="m-a")[0], enrol(client, story.admin_b, machine_id="m-b")[0]]
    # Stored tags that the server's event payload cannot be built from (validation refuses them).
    with db.session(write=True) as session:
        session.execute(update(Server).where(Server.id == broken).values(tags=[{"not": "a tag"}]))
    later = utcnow() + timedelta(seconds=settings.offline_after + settings.flush_interval + 1)

    assert mark_offline(db, settings, later, views=server_views()) == 3
    assert all(_status(db, server_id) == "offline" for server_id in [broken, *others])
    assert _offline_events(db) == sorted(others)
    with db.session(write=False) as session:
        [item] = quarantine.listing(session, pipeline="servers.offline")
    assert item.team_id == story.team_a and "ValidationError" in item.reason
    # Not tried again on every tick: the server is offline, only its event waits in the quarantine.
    assert mark_offline(db, settings, later + timedelta(seconds=1), views=server_views()) == 0

    with db.session(write=True) as session:
        session.execute(update(Server).where(Server.id == broken).values(tags=["fixed"]))
    assert quarantine.replay(db, item.id, replayers(db, settings), now=utcnow()) is True
    assert _offline_events(db) == sorted([broken, *others])
    with db.session(write=False) as session:
        event = session.scalars(select(Event).where(Event.server_id == broken)
                                .where(Event.type == "server.offline")).one()
        assert event.payload["server"]["tags"] == ["fixed"] and event.payload["previous_status"] == "online"
        assert quarantine.listing(session) == []


def test_every_job_reports_its_health_and_recovers_with_the_database(db: Database, settings: Settings,
                                                                     tmp_path: Path) -> None:
    health = PipelineHealth()
    dead = Database(f"sqlite:///{tmp_path}") if db.is_sqlite else \
        Database("postgresql+psycopg://postgres@127.0.0.1:1/hostatlas?connect_timeout=2")
    database_jobs = {"servers.mark_offline", "webhooks.log_retention", "heartbeats.deadlines",
                     "heartbeats.ping_retention", "heartbeats.flip_retention", "alerts.evaluate", "certwatch.expiry"}
    try:
        done = Worker(dead, settings, periodic(), health=health).run_once()
    finally:
        dead.dispose()
    assert {name for name, count in done.items() if count == -1} == database_jobs
    stuck = {state.name: state for state in health.stuck(0)}
    assert set(stuck) == {f"job:{name}" for name in database_jobs}
    assert all(state.last_error and "OperationalError" in state.last_error for state in stuck.values())

    Worker(db, settings, periodic(), health=health).run_once()
    assert health.stuck(0) == []
    assert {state.name for state in health.snapshot()} == {f"job:{name}" for name, _ in periodic()}
