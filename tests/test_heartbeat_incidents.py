"""Heartbeats as incidents: one going down opens one incident, coming back up resolves it; a heartbeat of an
offline server joins the server's outage incident and sends neither heartbeat.missed nor heartbeat.recovered."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.heartbeats.jobs import sweep_deadlines
from hostatlas.heartbeats.models import Heartbeat
from hostatlas.incidents.models import Incident, IncidentEntry
from hostatlas.jobs import SERVER_VIEWS, replayers
from hostatlas.pipelines import quarantine
from hostatlas.servers.jobs import mark_offline
from hostatlas.settings import Settings
from tests.heartbeat_rows import PUBLIC_URL, heartbeat_events, make_heartbeat, ping, status_of
from tests.support import Story, enrol


def _settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"public_url": PUBLIC_URL})


def _incidents(db: Database, heartbeat_id: int) -> list[Incident]:
    with db.session(write=False) as session:
        return list(session.scalars(select(Incident).where(Incident.source == "heartbeat",
                                                           Incident.source_key == f"heartbeat:{heartbeat_id}")
                                    .order_by(Incident.id)))


def _timeline(db: Database, incident_id: int) -> list[str]:
    with db.session(write=False) as session:
        return list(session.scalars(select(IncidentEntry.kind).where(IncidentEntry.incident_id == incident_id)
                                    .order_by(IncidentEntry.id)))


def _incident_events(db: Database, incident_id: int) -> list[str]:
    with db.session(write=False) as session:
        return list(session.scalars(select(Event.type).where(Event.resource_type == "incident",
                                                             Event.resource_id == incident_id).order_by(Event.id)))


def _down(db: Database, settings: Settings, heartbeat_id: int, at: datetime) -> None:
    """Ping at ``at``, then let the deadline pass (interval 60 s, no grace): the heartbeat goes down."""
    ping(db, heartbeat_id, at)
    sweep_deadlines(db, settings, at + timedelta(seconds=60))
    assert status_of(db, heartbeat_id) == "down"


def test_a_heartbeat_going_down_opens_one_incident_and_its_recovery_resolves_it(db: Database, settings: Settings,
                                                                               story: Story) -> None:
    hb_settings = _settings(settings)
    t0 = utcnow()
    hb = make_heartbeat(db, story.team_a, now=t0, name="nightly-backup", interval=60, grace=0)
    _down(db, hb_settings, hb, t0)
    assert sweep_deadlines(db, hb_settings, t0 + timedelta(days=1)) == 0  # down stays down: nothing new

    [incident] = _incidents(db, hb)
    assert incident.title == "Heartbeat nightly-backup is down" and incident.severity == "critical"
    assert incident.status == "open" and incident.type == "automatic" and incident.server_id is None
    assert incident.detected_at == t0 + timedelta(seconds=60) and _timeline(db, incident.id) == ["opened"]
    with db.session(write=False) as session:
        opened = session.scalar(select(IncidentEntry).where(IncidentEntry.incident_id == incident.id))
        assert opened is not None and opened.data == {"heartbeat_id": hb, "cause": "missed"}
    assert [event.type for event in heartbeat_events(db, hb)] == ["heartbeat.missed"]
    assert _incident_events(db, incident.id) == ["incident.created"]

    back = t0 + timedelta(days=1, seconds=5)
    ping(db, hb, back)
    [incident] = _incidents(db, hb)
    assert incident.status == "resolved" and incident.resolved_at == back and incident.resolved_by == "system"
    assert [event.type for event in heartbeat_events(db, hb)] == ["heartbeat.missed", "heartbeat.recovered"]
    assert _incident_events(db, incident.id) == ["incident.created", "incident.resolved"]

    # Down again a day later: a new outage, a new incident.
    _down(db, hb_settings, hb, back + timedelta(days=1))
    assert [i.status for i in _incidents(db, hb)] == ["resolved", "open"]


def test_a_heartbeat_of_an_offline_server_joins_its_outage_and_sends_no_heartbeat_events(
        client: TestClient, db: Database, settings: Settings, story: Story) -> None:
    hb_settings = _settings(settings)
    server_id, _ = enrol(client, story.admin_a)
    t0 = utcnow() + timedelta(seconds=settings.offline_after + settings.flush_interval + 10)
    assert mark_offline(db, settings, t0, views=SERVER_VIEWS) == 1
    with db.session(write=False) as session:
        outage = session.scalars(select(Incident).where(Incident.source == "server")).one()
    hb = make_heartbeat(db, story.team_a, now=t0, name="db-dump", interval=60, grace=0)
    with db.session(write=True) as session:
        session.execute(update(Heartbeat).where(Heartbeat.id == hb).values(server_id=server_id))

    _down(db, hb_settings, hb, t0)
    [incident] = _incidents(db, hb)
    assert incident.parent_id == outage.id and incident.suppressed and incident.server_id == server_id
    assert heartbeat_events(db, hb) == [] and _incident_events(db, incident.id) == []
    assert _timeline(db, outage.id)[-1] == "attached"

    # It comes back while the server is still down: resolved quietly, as it went down.
    ping(db, hb, t0 + timedelta(minutes=5))
    [incident] = _incidents(db, hb)
    assert incident.status == "resolved" and heartbeat_events(db, hb) == []
    assert _incident_events(db, incident.id) == []


def test_a_missed_event_set_aside_opens_its_incident_when_replayed(db: Database, settings: Settings,
                                                                   story: Story) -> None:
    hb_settings = _settings(settings)
    t0 = utcnow()
    hb = make_heartbeat(db, story.team_a, now=t0, name="no-event", interval=60, grace=0)
    ping(db, hb, t0)
    with db.session(write=True) as session:
        # Stored tags the event payload cannot be built from: the flip is stored, its event set aside.
        session.execute(update(Heartbeat).where(Heartbeat.id == hb).values(tags=[{"not": "a tag"}]))
    sweep_deadlines(db, hb_settings, t0 + timedelta(seconds=60))
    assert status_of(db, hb) == "down" and heartbeat_events(db, hb) == [] and _incidents(db, hb) == []

    with db.session(write=True) as session:
        session.execute(update(Heartbeat).where(Heartbeat.id == hb).values(tags=["fixed"]))
        [item] = quarantine.listing(session)
    assert quarantine.replay(db, item.id, replayers(db, hb_settings), now=utcnow()) is True
    [incident] = _incidents(db, hb)
    assert incident.status == "open" and incident.detected_at == t0 + timedelta(seconds=60)
    assert [event.type for event in heartbeat_events(db, hb)] == ["heartbeat.missed"]
