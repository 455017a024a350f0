"""One poisoned check-in never stops the check-in flush, nor turns the fleet offline.

The edge refuses the inputs known to poison a flush (NUL, lone surrogates, integers past 64 bits); these
tests put such check-ins straight into the buffer, where the edge cannot stop them any more, as a stand-in
for whatever the next unforeseen poison is.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from hostatlas.app import create_app, flush_buffers
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.http import runtime
from hostatlas.inventory.service import server_views
from hostatlas.jobs import replayers
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.servers.checkins import Checkin, CheckinBuffer
from hostatlas.servers.jobs import mark_offline
from hostatlas.servers.models import Server
from hostatlas.settings import Settings
from tests.support import Story, bearer, enrol

# Refused by SQLite ("Python int too large to convert to SQLite INTEGER") and PostgreSQL ("bigint out of range").
TOO_BIG = 2**70


def _quarantined(db: Database, pipeline: str) -> list[QuarantinedItem]:
    with db.session(write=False) as session:
        return quarantine.listing(session, pipeline=pipeline)


def _server(db: Database, server_id: int) -> Server:
    with db.session(write=False) as session:
        return session.get_one(Server, server_id)


def _backdate(db: Database, server_ids: list[int], at: datetime) -> None:
    with db.session(write=True) as session:
        session.execute(update(Server).where(Server.id.in_(server_ids)).values(last_seen_at=at, created_at=at))


def _dead_database(db: Database, tmp_path: Path) -> Database:
    """The same kind of database, unreachable: a refused port, or an SQLite file that is a directory."""
    if db.is_sqlite:
        return Database(f"sqlite:///{tmp_path}")
    return Database("postgresql+psycopg://postgres@127.0.0.1:1/hostatlas?connect_timeout=2")


def _wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_poison_checkin_is_set_aside_and_every_other_team_keeps_checking_in(
        db: Database, settings: Settings, story: Story) -> None:
    fast = settings.model_copy(update={"flush_interval": 0.2})
    with TestClient(create_app(fast, db=db)) as client:
        poisoned, _ = enrol(client, story.admin_a, machine_id="m-poison")
        healthy, token = enrol(client, story.admin_b, machine_id="m-healthy")
        buffer = runtime.of(client.app).part(CheckinBuffer)
        buffer.note(poisoned, Checkin(at=utcnow(), agent_version="1", uptime_s=TOO_BIG, boot_id=None))
        # Sent after the poison, by another team's agent.
        assert client.post("/api/v1/agent/check-in", headers=bearer(token),
                           json={"agent_version": "2.0.0", "uptime_s": 77}).status_code == 200
        _wait_for(lambda: _server(db, healthy).uptime_s == 77)
        _wait_for(lambda: len(_quarantined(db, "servers.checkins")) == 1)
        [item] = _quarantined(db, "servers.checkins")
        assert item.team_id == story.team_a and item.failures == 1
        assert "OverflowError" in item.reason or "DataError" in item.reason
        assert runtime.of(client.app).health.stuck(0) == []
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["quarantine"] == "items"
        assert "servers.checkins" in ready.json()["reasons"][0]

        # Not retried at the head of the line: later passes write the others and leave it aside.
        assert client.post("/api/v1/agent/check-in", headers=bearer(token),
                           json={"uptime_s": 78}).status_code == 200
        _wait_for(lambda: _server(db, healthy).uptime_s == 78)
        assert len(_quarantined(db, "servers.checkins")) == 1
        assert _server(db, poisoned).uptime_s is None

        assert quarantine.replay(db, item.id, replayers(db, fast), now=utcnow()) is False
        [kept] = _quarantined(db, "servers.checkins")
        assert kept.failures == 2
        quarantine.drop(db, item.id)
        assert _quarantined(db, "servers.checkins") == []
        assert client.get("/readyz").status_code == 200


def test_a_nul_checkin_leaves_every_other_server_online(db: Database, settings: Settings, story: Story) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite stores NUL in text; the poison is PostgreSQL's")
    fast = settings.model_copy(update={"flush_interval": 0.2, "offline_after": 300})
    with TestClient(create_app(fast, db=db)) as client:
        poisoned, _ = enrol(client, story.admin_a, machine_id="m-nul")
        fleet = [enrol(client, story.admin_a, machine_id="m-a1"), enrol(client, story.admin_a, machine_id="m-a2"),
                 enrol(client, story.admin_b, machine_id="m-b1"), enrol(client, story.admin_b, machine_id="m-b2")]
        # Everyone was last heard of an hour ago; from now on only the check-ins below keep them online.
        _backdate(db, [poisoned, *(server_id for server_id, _ in fleet)], utcnow() - timedelta(hours=1))
        buffer = runtime.of(client.app).part(CheckinBuffer)
        buffer.note(poisoned, Checkin(at=utcnow(), agent_version="x\x00y", uptime_s=1, boot_id=None))
        checked_in_at = utcnow()
        for _, token in fleet:
            assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 200
        _wait_for(lambda: all(_server(db, server_id).last_seen_at >= checked_in_at for server_id, _ in fleet))
        _wait_for(lambda: len(_quarantined(db, "servers.checkins")) == 1)
        assert "NUL" in _quarantined(db, "servers.checkins")[0].reason

    assert mark_offline(db, fast, checked_in_at + timedelta(seconds=fast.offline_after), views=server_views()) == 1
    with db.session(write=False) as session:
        offline = list(session.scalars(select(Event.server_id).where(Event.type == "server.offline")))
    assert offline == [poisoned]


def test_a_quarantined_checkin_replays_once_its_cause_is_fixed(db: Database, settings: Settings,
                                                                story: Story) -> None:
    with TestClient(create_app(settings, db=db)) as client:
        broken, token = enrol(client, story.admin_a, machine_id="m-broken")
        healthy, healthy_token = enrol(client, story.admin_b, machine_id="m-fine")
    # An offline server whose stored tags its server.online event cannot be built from.
    with db.session(write=True) as session:
        session.execute(update(Server).where(Server.id.in_([broken, healthy]))
                        .values(status="offline", offline_since=utcnow()))
        session.execute(update(Server).where(Server.id == broken).values(tags=[{"not": "a tag"}]))
    buffer = CheckinBuffer(server_views())
    at = utcnow()
    buffer.note(broken, Checkin(at=at, agent_version="3.0.0", uptime_s=5, boot_id="b"))
    buffer.note(healthy, Checkin(at=at, agent_version="3.0.0", uptime_s=6, boot_id="b"))
    assert buffer.flush(db) == 1
    assert _server(db, healthy).status == "online" and _server(db, broken).status == "offline"
    [item] = _quarantined(db, "servers.checkins")
    assert "ValidationError" in item.reason and item.team_id == story.team_a
    assert buffer.flush(db) == 0

    with db.session(write=True) as session:
        session.execute(update(Server).where(Server.id == broken).values(tags=["fixed"]))
    assert quarantine.replay(db, item.id, replayers(db, settings), now=utcnow()) is True
    server = _server(db, broken)
    assert server.status == "online" and server.uptime_s == 5 and server.last_seen_at == at
    assert _quarantined(db, "servers.checkins") == []
    with db.session(write=False) as session:
        online = list(session.scalars(select(Event.server_id).where(Event.type == "server.online")))
    assert sorted(online) == sorted([broken, healthy])


def test_a_database_outage_sets_nothing_aside_and_loses_no_checkin(db: Database, settings: Settings,
                                                                   story: Story, tmp_path: Path) -> None:
    impatient = settings.model_copy(update={"ready_stuck_after": 0.05})
    with TestClient(create_app(impatient, db=db)) as client:
        servers = [enrol(client, story.admin_a, machine_id=f"m-{n}")[0] for n in range(3)]
        app = client.app
        at = utcnow()
        for server_id in servers:
            buffer = runtime.of(app).part(CheckinBuffer)
            buffer.note(server_id, Checkin(at=at, agent_version="9", uptime_s=9, boot_id=None))
        dead = _dead_database(db, tmp_path)
        runtime.of(app).db = dead
        try:
            flush_buffers(runtime.of(app))
        finally:
            runtime.of(app).db = db
            dead.dispose()
        stuck = {state.name: state for state in runtime.of(app).health.stuck(0)}
        assert {"servers.checkins", "agentapi.tokens"} <= set(stuck)
        assert "OperationalError" in (stuck["servers.checkins"].last_error or "")
        assert _quarantined(db, "servers.checkins") == []
        assert all(_server(db, server_id).uptime_s is None for server_id in servers)
        _wait_for(lambda: client.get("/readyz").status_code == 503)
        assert any("servers.checkins" in reason for reason in client.get("/readyz").json()["reasons"])

        flush_buffers(runtime.of(app))
        assert all(_server(db, server_id).uptime_s == 9 for server_id in servers)
        assert runtime.of(app).health.stuck(0) == []
        assert client.get("/readyz").status_code == 200
