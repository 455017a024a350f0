"""Offline detection: the worker's sweep, the events it writes, and several workers racing."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hostatlas.app import create_app
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.http import runtime
from hostatlas.inventory.service import server_views
from hostatlas.jobs import periodic
from hostatlas.servers.checkins import CheckinBuffer
from hostatlas.servers.jobs import mark_offline
from hostatlas.servers.models import Server
from hostatlas.settings import Settings
from hostatlas.worker import Worker
from tests.support import Story, bearer, enrol, hostatlas_command, running_server, wait_until


def _events(db: Database, kind: str) -> list[Event]:
    with db.session(write=False) as session:
        return list(session.scalars(select(Event).where(Event.type == kind).order_by(Event.id)))


def _count(db: Database, kind: str, server_id: int) -> int:
    with db.session(write=False) as session:
        return session.scalar(select(func.count()).select_from(Event)
                              .where(Event.server_id == server_id, Event.type == kind)) or 0


def _uptime(db: Database, server_id: int) -> int | None:
    with db.session(write=False) as session:
        return session.get_one(Server, server_id).uptime_s


def test_silent_server_goes_offline_once_and_back_online(db: Database, settings: Settings, story: Story) -> None:
    fast = settings.model_copy(update={"offline_after": 300, "flush_interval": 1})
    with TestClient(create_app(fast, db=db)) as client:
        server_id, token = enrol(client, story.admin_a)
        # The window counts from the enrolment's own time (not from after its answer, which a loaded
        # machine can delay past the second of slack below).
        with db.session(write=False) as session:
            start = session.get_one(Server, server_id).last_seen_at
        assert start is not None
        worker = Worker(db, fast, periodic())
        # Just inside the window (plus one flush interval of slack): still online.
        assert worker.run_once(start + timedelta(seconds=300))["servers.mark_offline"] == 0
        assert worker.run_once(start + timedelta(seconds=302))["servers.mark_offline"] == 1
        assert mark_offline(db, fast, start + timedelta(seconds=400), views=server_views()) == 0

        offline = _events(db, "server.offline")
        assert len(offline) == 1
        payload = offline[0].payload
        assert payload["server"]["id"] == server_id and payload["server"]["status"] == "offline"
        assert payload["previous_status"] == "online" and payload["offline_since"].endswith("Z")
        assert {"hostname", "ip_address", "last_seen_at"} <= set(payload["server"])
        detail = client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).json()
        assert detail["status"] == "offline" and detail["offline_since"] is not None

        assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 200
        runtime.of(client.app).part(CheckinBuffer).flush(db)
        client.post("/api/v1/agent/check-in", headers=bearer(token), json={})
        runtime.of(client.app).part(CheckinBuffer).flush(db)
        online = _events(db, "server.online")
        assert len(online) == 1
        assert online[0].payload["server"]["status"] == "online"
        assert online[0].payload["previous_status"] == "offline"
        assert client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).json()["status"] == "online"

        feed = client.get(f"/api/v1/events?server_id={server_id}&sort=id", headers=bearer(story.admin_a)).json()
        # The outage is an incident too (hostatlas.incidents.outages), announced next to each flip.
        assert [e["type"] for e in feed["data"]] == ["server.registered", "server.offline", "incident.created",
                                                    "server.online", "incident.resolved"]
        assert feed["data"][1]["data"] == payload


def test_two_worker_processes_fire_exactly_one_offline_event(db: Database, story: Story, database_url: str,
                                                              tmp_path: Path) -> None:
    env = {"HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_OFFLINE_AFTER": "2", "HOSTATLAS_WORKER_TICK": "0.1",
           "HOSTATLAS_FLUSH_INTERVAL": "0.2"}
    workers = [subprocess.Popen([*hostatlas_command(), "worker"], cwd=tmp_path, env={**os.environ, **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        with running_server(tmp_path, env, extra_args=("--no-worker",)) as base, httpx.Client(base_url=base) as http:
            server_id, token = enrol(http, story.admin_a)
            assert http.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 200
            last_checkin = time.monotonic()
            wait_until(lambda: _events(db, "server.offline"), timeout=10, what="the server.offline event")
            went_offline_after = time.monotonic() - last_checkin
            assert went_offline_after < 4, went_offline_after
            # A double fire would come from another sweep than the one that flipped the server. A sentinel
            # enrolled now goes silent a whole offline window later: once its own event is there, the workers
            # have swept for that long since the flip, and the server must still have exactly one event.
            sentinel, _ = enrol(http, story.admin_a, machine_id="m-sentinel", hostname="sentinel")
            wait_until(lambda: _count(db, "server.offline", sentinel) == 1, timeout=10,
                       what="the sentinel's server.offline event")
            assert len(_events(db, "server.offline")) == 2
            assert _count(db, "server.offline", server_id) == 1

            assert http.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 200
            wait_until(lambda: _events(db, "server.online"), timeout=5, what="the server.online event")
            # A second server.online would come from a later flush: wait until one has written a later check-in.
            assert http.post("/api/v1/agent/check-in", headers=bearer(token),
                             json={"uptime_s": 4242}).status_code == 200
            wait_until(lambda: _uptime(db, server_id) == 4242, timeout=5, what="a later check-in flush")
            assert len(_events(db, "server.online")) == 1
            assert _count(db, "server.offline", server_id) == 1
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            assert worker.wait(timeout=15) == 0  # SIGTERM is a clean stop



def test_re_enrolling_an_offline_server_brings_it_online_with_its_event(db: Database, settings: Settings,
                                                                       story: Story) -> None:
    with TestClient(create_app(settings, db=db)) as client:
        server_id, _ = enrol(client, story.admin_a)
        silent_for = timedelta(seconds=settings.offline_after + settings.flush_interval + 1)
        assert mark_offline(db, settings, utcnow() + silent_for, views=server_views()) == 1
        again, _ = enrol(client, story.admin_a)
        assert again == server_id
        online = _events(db, "server.online")
        assert len(online) == 1 and online[0].payload["previous_status"] == "offline"
        assert client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).json()["status"] == "online"
