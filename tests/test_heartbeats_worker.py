"""The heartbeats' worker jobs on a controlled clock: the deadline sweep (late, down, runs that time out), its
events and their webhooks, several workers at once, one broken heartbeat among many, and retention."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select, update
from standardwebhooks.webhooks import Webhook as StandardWebhook

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.heartbeats import jobs
from hostatlas.heartbeats.models import Heartbeat, HeartbeatFlip, HeartbeatPing, PingKind
from hostatlas.jobs import periodic, replayers
from hostatlas.pipelines import quarantine
from hostatlas.settings import Settings
from hostatlas.webhooks import service as webhooks
from hostatlas.webhooks.dispatcher import Dispatcher
from hostatlas.worker import Worker
from tests.heartbeat_rows import (
    PUBLIC_URL,
    flips_of,
    heartbeat_events,
    make_heartbeat,
    pause,
    ping,
    ping_count,
    resume,
    status_of,
)
from tests.receiver import receiver
from tests.support import Story, hostatlas_command, wait_until

T0 = datetime(2026, 3, 21, 14, 0, tzinfo=UTC)
LOOPBACK_ALLOWED = webhooks.Destinations(allow_private=True, resolver=lambda host, port: ["127.0.0.1"])


@pytest.fixture
def hb_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"public_url": PUBLIC_URL, "webhook_allow_private": True})


def _worker(db: Database, settings: Settings) -> Worker:
    """A worker running the heartbeats' jobs as ``hostatlas.jobs`` registers them (the others cost time here)."""
    return Worker(db, settings, [(name, job) for name, job in periodic() if name.startswith("heartbeats.")])


def _at(worker: Worker, moment: datetime) -> int:
    return worker.run_once(moment)["heartbeats.deadlines"]


def _types(db: Database, heartbeat_id: int) -> list[str]:
    return [event.type for event in heartbeat_events(db, heartbeat_id)]


def test_an_interval_heartbeat_goes_late_then_down_at_its_instants_and_recovers(db: Database, hb_settings: Settings,
                                                                                story: Story) -> None:
    hb = make_heartbeat(db, story.team_a, now=T0, interval=3600, grace=600)
    worker = _worker(db, hb_settings)
    assert _at(worker, T0 + timedelta(days=30)) == 0 and status_of(db, hb) == "new"  # never pinged: nothing due
    ping(db, hb, T0)
    assert status_of(db, hb) == "up"
    assert _at(worker, T0 + timedelta(seconds=3599)) == 0 and status_of(db, hb) == "up"
    assert _at(worker, T0 + timedelta(seconds=3600)) == 1 and status_of(db, hb) == "late"
    assert _at(worker, T0 + timedelta(seconds=4199)) == 0 and status_of(db, hb) == "late"
    assert _at(worker, T0 + timedelta(seconds=4200)) == 1 and status_of(db, hb) == "down"
    assert _at(worker, T0 + timedelta(days=3)) == 0 and status_of(db, hb) == "down"  # once per outage
    with db.session(write=False) as session:
        assert session.get_one(Heartbeat, hb).deadline_at is None  # down: only a ping can change it

    [missed] = heartbeat_events(db, hb)
    assert missed.type == "heartbeat.missed" and missed.created_at == T0 + timedelta(seconds=4200)
    assert missed.payload["id"] == hb and missed.payload["status"] == "down" and missed.payload["cause"] == "missed"
    assert missed.payload["ping_url"].startswith(f"{PUBLIC_URL}/heartbeat/")
    assert missed.payload["last_ping_at"] == "2026-03-21T14:00:00Z"
    assert missed.payload["next_due_at"] == "2026-03-21T15:00:00Z"

    back = T0 + timedelta(days=3, seconds=5)
    ping(db, hb, back)
    assert status_of(db, hb) == "up" and _types(db, hb) == ["heartbeat.missed", "heartbeat.recovered"]
    recovered = heartbeat_events(db, hb)[1].payload
    assert recovered["status"] == "up" and recovered["cause"] == "ping"
    assert flips_of(db, hb) == [("new", "up", "ping"), ("up", "late", "late"), ("late", "down", "missed"),
                                ("down", "up", "ping")]
    # A ping inside grace takes a late heartbeat back up, silently, and moves the deadline.
    assert _at(worker, back + timedelta(seconds=3600)) == 1 and status_of(db, hb) == "late"
    ping(db, hb, back + timedelta(seconds=3700))
    assert status_of(db, hb) == "up" and len(heartbeat_events(db, hb)) == 2
    assert _at(worker, back + timedelta(seconds=3700 + 3599)) == 0 and status_of(db, hb) == "up"


def test_a_cron_heartbeat_in_berlin_keeps_its_instants_across_both_dst_changes(db: Database, hb_settings: Settings,
                                                                              story: Story) -> None:
    hb = make_heartbeat(db, story.team_a, now=T0, schedule="30 2 * * *", timezone="Europe/Berlin", grace=300)
    worker = _worker(db, hb_settings)
    # Spring: on 2026-03-29 02:30 does not exist in Berlin (02:00 CET -> 03:00 CEST): due at 03:00 CEST = 01:00Z.
    ping(db, hb, datetime(2026, 3, 28, 1, 30, 10, tzinfo=UTC))  # 02:30 CET
    assert _at(worker, datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)) == 0 and status_of(db, hb) == "up"
    assert _at(worker, datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) == 1 and status_of(db, hb) == "late"
    assert _at(worker, datetime(2026, 3, 29, 1, 4, 59, tzinfo=UTC)) == 0 and status_of(db, hb) == "late"
    assert _at(worker, datetime(2026, 3, 29, 1, 5, tzinfo=UTC)) == 1 and status_of(db, hb) == "down"
    # The next day is summer time: 02:30 CEST = 00:30Z.
    ping(db, hb, datetime(2026, 3, 29, 1, 6, tzinfo=UTC))
    with db.session(write=False) as session:
        assert session.get_one(Heartbeat, hb).next_due_at == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)

    # Autumn: on 2026-10-25 02:30 happens twice (03:00 CEST -> 02:00 CET); the job is expected once, at the first.
    ping(db, hb, datetime(2026, 10, 24, 0, 30, 5, tzinfo=UTC))  # 02:30 CEST
    assert _at(worker, datetime(2026, 10, 25, 0, 29, 59, tzinfo=UTC)) == 0 and status_of(db, hb) == "up"
    ping(db, hb, datetime(2026, 10, 25, 0, 30, 5, tzinfo=UTC))  # the first 02:30 (CEST)
    # Not due again at the second 02:30 (CET, 01:30Z), but at 02:30 CET the next day (01:30Z on the 26th).
    assert _at(worker, datetime(2026, 10, 25, 1, 40, tzinfo=UTC)) == 0 and status_of(db, hb) == "up"
    assert _at(worker, datetime(2026, 10, 26, 1, 29, 59, tzinfo=UTC)) == 0 and status_of(db, hb) == "up"
    assert _at(worker, datetime(2026, 10, 26, 1, 30, tzinfo=UTC)) == 1 and status_of(db, hb) == "late"
    assert _at(worker, datetime(2026, 10, 26, 1, 35, tzinfo=UTC)) == 1 and status_of(db, hb) == "down"
    assert _types(db, hb) == ["heartbeat.missed", "heartbeat.recovered", "heartbeat.missed"]


def test_a_started_run_that_never_ends_is_down_after_max_runtime(db: Database, hb_settings: Settings,
                                                                story: Story) -> None:
    hb = make_heartbeat(db, story.team_a, now=T0, interval=86400, grace=3600, max_runtime=120)
    worker = _worker(db, hb_settings)
    ping(db, hb, T0, PingKind.START)
    assert status_of(db, hb) == "started"
    assert _at(worker, T0 + timedelta(seconds=119)) == 0 and status_of(db, hb) == "started"
    assert _at(worker, T0 + timedelta(seconds=120)) == 1 and status_of(db, hb) == "down"
    [missed] = heartbeat_events(db, hb)
    assert missed.payload["cause"] == "run_timeout" and missed.payload["status"] == "down"
    # Without max_runtime the run's allowance is the grace.
    other = make_heartbeat(db, story.team_a, now=T0, name="no-max", interval=86400, grace=300)
    ping(db, other, T0, PingKind.START)
    assert _at(worker, T0 + timedelta(seconds=299)) == 0 and status_of(db, other) == "started"
    assert _at(worker, T0 + timedelta(seconds=300)) == 1 and status_of(db, other) == "down"


def test_manual_resume_stays_down_until_resumed_and_paused_never_alerts(db: Database, hb_settings: Settings,
                                                                       story: Story) -> None:
    worker = _worker(db, hb_settings)
    sticky = make_heartbeat(db, story.team_a, now=T0, name="sticky", interval=60, grace=60, manual_resume=True)
    ping(db, sticky, T0)
    # A worker first looking after due + grace flips it straight to down.
    assert _at(worker, T0 + timedelta(seconds=120)) == 1 and status_of(db, sticky) == "down"
    assert flips_of(db, sticky)[-1] == ("up", "down", "missed")
    ping(db, sticky, T0 + timedelta(seconds=130))  # recorded, ignored
    assert status_of(db, sticky) == "down" and ping_count(db, sticky) == 2
    assert _at(worker, T0 + timedelta(days=1)) == 0 and _types(db, sticky) == ["heartbeat.missed"]
    resume(db, sticky, T0 + timedelta(days=1))
    assert status_of(db, sticky) == "new"
    ping(db, sticky, T0 + timedelta(days=1, seconds=1))
    assert status_of(db, sticky) == "up" and _types(db, sticky) == ["heartbeat.missed"]  # resumed: not "recovered"

    paused = make_heartbeat(db, story.team_a, now=T0, name="paused", interval=60, grace=60)
    ping(db, paused, T0)
    pause(db, paused, T0 + timedelta(seconds=10))
    for minutes in (2, 60, 60 * 24 * 30):
        _at(worker, T0 + timedelta(minutes=minutes))
        assert status_of(db, paused) == "paused"
    assert _types(db, paused) == [] and flips_of(db, paused)[-1] == ("up", "paused", "paused")
    ping(db, paused, T0 + timedelta(days=31))  # without manual_resume a ping brings it back into monitoring
    assert status_of(db, paused) == "up" and _types(db, paused) == []


def test_two_workers_at_once_make_one_flip_and_one_missed_event_per_outage(db: Database, hb_settings: Settings,
                                                                         story: Story) -> None:
    heartbeats = [make_heartbeat(db, story.team_a, now=T0, name=f"job-{n}", interval=60, grace=30) for n in range(60)]
    for hb in heartbeats:
        ping(db, hb, T0)
    workers = [_worker(db, hb_settings) for _ in range(2)]

    def race(moment: datetime) -> list[int]:
        start = threading.Barrier(len(workers))
        made: list[int] = []

        def run(worker: Worker) -> None:
            start.wait()
            made.append(_at(worker, moment))

        threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        return made

    assert sum(race(T0 + timedelta(seconds=60))) == 60  # every one late, once
    assert sum(race(T0 + timedelta(seconds=95))) == 60  # every one down, once
    assert sum(race(T0 + timedelta(seconds=200))) == 0
    with db.session(write=False) as session:
        missed = list(session.scalars(select(Event.resource_id).where(Event.type == "heartbeat.missed")))
        flips = list(session.scalars(select(HeartbeatFlip.heartbeat_id).where(HeartbeatFlip.to_status == "down")))
    assert sorted(missed) == sorted(heartbeats) == sorted(flips)
    assert all(worker.health.stuck(0) == [] for worker in workers)


def _missed_by_heartbeat(db: Database) -> dict[int, int]:
    with db.session(write=False) as session:
        rows = session.execute(select(Event.resource_id, func.count()).where(Event.type == "heartbeat.missed")
                               .group_by(Event.resource_id)).all()
    return {int(heartbeat_id): count for heartbeat_id, count in rows}


def test_two_worker_processes_fire_one_missed_event_per_outage(db: Database, story: Story, database_url: str,
                                                               tmp_path: Path) -> None:
    env = {**os.environ, "HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_WORKER_TICK": "0.1"}
    workers = [subprocess.Popen([*hostatlas_command(), "worker"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        now = utcnow()
        heartbeats = [make_heartbeat(db, story.team_a, now=now, name=f"job-{n}", interval=1, grace=1)
                      for n in range(20)]
        for hb in heartbeats:
            ping(db, hb, now)
        wait_until(lambda: set(_missed_by_heartbeat(db)) == set(heartbeats), timeout=20,
                   what="every heartbeat's heartbeat.missed")
        # A double fire would come from a later sweep: once a sentinel pinged now has gone down too, the
        # workers have swept for a whole outage since, and each heartbeat must still have one event.
        sentinel = make_heartbeat(db, story.team_a, now=utcnow(), name="sentinel", interval=1, grace=1)
        ping(db, sentinel, utcnow())
        wait_until(lambda: sentinel in _missed_by_heartbeat(db), timeout=10, what="the sentinel's heartbeat.missed")
        assert _missed_by_heartbeat(db) == dict.fromkeys([*heartbeats, sentinel], 1)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            assert worker.wait(timeout=15) == 0  # SIGTERM is a clean stop


def test_a_webhook_subscribed_to_heartbeat_missed_receives_it_signed(db: Database, hb_settings: Settings,
                                                                    story: Story) -> None:
    hb = make_heartbeat(db, story.team_a, now=T0, interval=300, grace=60)
    with receiver() as hook:
        with db.session(write=True) as session:
            webhook = webhooks.create_webhook(session, team_id=story.team_a, url=hook.url,
                                              events_=["heartbeat.missed"], description="cron alerts", now=T0,
                                              destinations=LOOPBACK_ALLOWED)
            secret = webhook.secret
        now = utcnow()
        ping(db, hb, now - timedelta(seconds=400))
        assert _at(_worker(db, hb_settings), now) == 1
        ping(db, hb, now + timedelta(seconds=1))  # heartbeat.recovered: not subscribed to
        assert asyncio.run(Dispatcher(db, hb_settings).run_once(now + timedelta(seconds=2))) == 1
        [request] = hook.wait_for(1)
    body = orjson.loads(request.body)
    assert body["event"] == "heartbeat.missed" == request.headers["x-hostatlas-event"]
    assert body["data"]["id"] == hb and body["data"]["status"] == "down" and body["data"]["cause"] == "missed"
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, request.headers["x-hostatlas-signature"])
    assert StandardWebhook(secret).verify(request.body, request.headers) == body


def test_a_heartbeat_that_cannot_be_processed_never_keeps_the_others_up(db: Database, hb_settings: Settings,
                                                                        story: Story) -> None:
    worker = _worker(db, hb_settings)
    others = [make_heartbeat(db, story.team_a, now=T0, name=f"ok-{n}", interval=60, grace=0) for n in range(4)]
    no_event = make_heartbeat(db, story.team_a, now=T0, name="no-event", interval=60, grace=0)
    unreadable = make_heartbeat(db, story.team_a, now=T0, name="unreadable", interval=60, grace=0)
    for hb in [*others, no_event, unreadable]:
        ping(db, hb, T0)
    with db.session(write=True) as session:
        # Stored tags the event payload cannot be built from; a status the machine does not know.
        session.execute(update(Heartbeat).where(Heartbeat.id == no_event).values(tags=[{"not": "a tag"}]))
        session.execute(update(Heartbeat).where(Heartbeat.id == unreadable).values(status="bogus"))

    assert _at(worker, T0 + timedelta(seconds=60)) == 5
    assert all(status_of(db, hb) == "down" for hb in [*others, no_event]) and status_of(db, unreadable) == "bogus"
    assert all(_types(db, hb) == ["heartbeat.missed"] for hb in others)
    assert _types(db, no_event) == []
    with db.session(write=False) as session:
        items = {json.loads(item.payload)["heartbeat_id"]: item for item in quarantine.listing(session)}
        assert session.get_one(Heartbeat, unreadable).deadline_at is None  # not tried again on every tick
    assert set(items) == {no_event, unreadable}
    assert "ValidationError" in items[no_event].reason and "ValueError" in items[unreadable].reason
    assert worker.health.stuck(0) == []
    assert _at(worker, T0 + timedelta(seconds=61)) == 0

    with db.session(write=True) as session:
        session.execute(update(Heartbeat).where(Heartbeat.id == no_event).values(tags=["fixed"]))
        session.execute(update(Heartbeat).where(Heartbeat.id == unreadable).values(status="up"))
    for item in items.values():
        assert quarantine.replay(db, item.id, replayers(db, hb_settings), now=utcnow()) is True
    [missed] = heartbeat_events(db, no_event)
    assert missed.type == "heartbeat.missed" and missed.payload["tags"] == ["fixed"]
    assert missed.payload["cause"] == "missed"
    assert status_of(db, unreadable) == "down" and _types(db, unreadable) == ["heartbeat.missed"]


def test_retention_keeps_the_last_pings_of_each_heartbeat_and_a_year_of_flips(db: Database, settings: Settings,
                                                                             story: Story) -> None:
    small = settings.model_copy(update={"ping_log_size": 5})
    busy = make_heartbeat(db, story.team_a, now=T0, name="busy", interval=60)
    quiet = make_heartbeat(db, story.team_a, now=T0, name="quiet", interval=60)
    for n in range(12):
        ping(db, busy, T0 + timedelta(seconds=n), PingKind.LOG)
    for n in range(3):
        ping(db, quiet, T0 + timedelta(seconds=n), PingKind.LOG)
    retention = jobs.PingLogRetention()
    assert retention(db, small, T0) == 7
    assert ping_count(db, busy) == 5 and ping_count(db, quiet) == 3
    with db.session(write=False) as session:
        kept = list(session.scalars(select(HeartbeatPing.at).where(HeartbeatPing.heartbeat_id == busy)
                                    .order_by(HeartbeatPing.id)))
    assert kept == [T0 + timedelta(seconds=n) for n in range(7, 12)]  # the newest
    assert retention(db, small, T0) == 0  # nothing new since: one cheap read
    for n in range(4):
        ping(db, quiet, T0 + timedelta(seconds=10 + n), PingKind.LOG)
    assert retention(db, small, T0) == 2 and ping_count(db, quiet) == 5 and ping_count(db, busy) == 5
    # With a larger log a heartbeat is trimmed once it has had a tenth of it since its last trim.
    larger = settings.model_copy(update={"ping_log_size": 20})
    fresh = jobs.PingLogRetention()  # a new worker: trims every heartbeat once, then follows new pings
    for n in range(20):
        ping(db, busy, T0 + timedelta(minutes=1, seconds=n), PingKind.LOG)
    assert fresh(db, larger, T0) == 5 and ping_count(db, busy) == 20
    ping(db, busy, T0 + timedelta(minutes=2), PingKind.LOG)
    assert fresh(db, larger, T0) == 0 and ping_count(db, busy) == 21  # one ping since: within the slack
    ping(db, busy, T0 + timedelta(minutes=2, seconds=1), PingKind.LOG)
    assert fresh(db, larger, T0) == 2 and ping_count(db, busy) == 20

    now = T0 + timedelta(days=400)
    with db.session(write=True) as session:
        session.add_all([HeartbeatFlip(heartbeat_id=busy, team_id=story.team_a, at=now - timedelta(days=days),
                                       from_status="up", to_status="late", cause="late") for days in (366, 364)])
    assert jobs.prune_flips(db, settings, now) == 1
    with db.session(write=False) as session:
        assert list(session.scalars(select(HeartbeatFlip.at))) == [now - timedelta(days=364)]
    assert jobs.prune_flips(db, settings, now) == 0
