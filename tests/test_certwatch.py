"""SSL expiry on a controlled clock: ssl.expiring once per threshold (30, 14, 7, 1 days) and certificate, again
after a renewal; the incident at 7 days (warning) and at expiry (critical), resolved by the renewal; domains;
several workers; one bad row; team walls; an offline server; the webhook's published shape."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from hostatlas.certwatch.jobs import CertificateWatch, watch_certificates
from hostatlas.certwatch.models import CertificateNotice
from hostatlas.certwatch.schemas import SslExpiringData
from hostatlas.clock import isoformat_z, utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.incidents.models import Incident, IncidentEntry
from hostatlas.inventory.models import Certificate
from hostatlas.jobs import SERVER_VIEWS, periodic, replayers
from hostatlas.pipelines import quarantine
from hostatlas.servers.jobs import mark_offline
from hostatlas.settings import Settings
from hostatlas.webhooks.dispatcher import Dispatcher
from hostatlas.worker import Worker
from tests.receiver import receiver
from tests.support import Story, bearer, enrol
from tests.test_webhooks_contract import _check_against

T0 = utcnow().replace(microsecond=0)
PATH = "/etc/letsencrypt/live/app.example.com/fullchain.pem"


def _cert(not_after: datetime, path: str = PATH, domains: tuple[str, ...] = ("app.example.com",)) -> dict[str, Any]:
    return {"path": path, "subject": f"CN={domains[0] if domains else 'x'}", "issuer": "CN=R3, O=Let's Encrypt",
            "domains": list(domains), "not_after": isoformat_z(not_after)}


def _discover(client: TestClient, token: str, *, certificates: list[dict[str, Any]] | None = None,
              domains: list[dict[str, Any]] | None = None) -> None:
    body: dict[str, Any] = {"certificates": certificates or []}
    if domains is not None:
        body["domains"] = domains
    response = client.post("/api/v1/agent/discovery", headers=bearer(token), json=body)
    assert response.status_code == 200, response.text


def _watch(db: Database, settings: Settings, at: datetime) -> int:
    return watch_certificates(db, settings, at)


def _expiring(db: Database, team_id: int | None = None) -> list[dict[str, Any]]:
    with db.session(write=False) as session:
        stmt = select(Event).where(Event.type == "ssl.expiring").order_by(Event.id)
        if team_id is not None:
            stmt = stmt.where(Event.team_id == team_id)
        return [event.payload for event in session.scalars(stmt)]


def _thresholds(db: Database) -> list[int]:
    return [payload["threshold_days"] for payload in _expiring(db)]


def _incidents(db: Database) -> list[Incident]:
    with db.session(write=False) as session:
        return list(session.scalars(select(Incident).where(Incident.source == "certificate").order_by(Incident.id)))


def _timeline(db: Database, incident_id: int) -> list[tuple[str, str]]:
    with db.session(write=False) as session:
        return [(entry.kind, entry.message) for entry in session.scalars(
            select(IncidentEntry).where(IncidentEntry.incident_id == incident_id).order_by(IncidentEntry.id))]


def _incident_events(db: Database, incident_id: int) -> list[str]:
    with db.session(write=False) as session:
        return list(session.scalars(select(Event.type).where(Event.resource_type == "incident",
                                                             Event.resource_id == incident_id).order_by(Event.id)))


def test_each_threshold_fires_once_and_the_incident_follows_the_certificate_to_its_renewal(
        client: TestClient, db: Database, settings: Settings, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    expiry = T0 + timedelta(days=30)
    _discover(client, token, certificates=[_cert(expiry)])

    assert _watch(db, settings, T0 - timedelta(seconds=1)) == 0  # 30 days and a second: nothing yet
    assert _watch(db, settings, T0) == 1
    assert _watch(db, settings, T0 + timedelta(minutes=5)) == 0  # the same crossing: nothing again
    [first] = _expiring(db)
    SslExpiringData.model_validate(first)
    assert first["threshold_days"] == 30 and first["days_left"] == 30 and first["incident_id"] is None
    assert first["not_after"] == isoformat_z(expiry) and first["domain"] is None
    assert first["server"] == {"id": server_id, "hostname": "web-prod-01"}
    assert first["certificate"]["path"] == PATH and first["certificate"]["server"]["id"] == server_id
    assert first["certificate"]["domains"] == ["app.example.com"] and _incidents(db) == []

    assert _watch(db, settings, T0 + timedelta(days=16)) == 1 and _thresholds(db) == [30, 14]
    assert _watch(db, settings, T0 + timedelta(days=20)) == 0 and _incidents(db) == []

    # 7 days: ssl.expiring(7) and an incident (warning), which the event names.
    assert _watch(db, settings, T0 + timedelta(days=23)) == 1 and _thresholds(db) == [30, 14, 7]
    [incident] = _incidents(db)
    assert incident.severity == "warning" and incident.status == "open" and incident.server_id == server_id
    assert incident.title == "Certificate CN=app.example.com on web-prod-01 expires soon"
    assert _expiring(db)[-1]["incident_id"] == incident.id and _expiring(db)[-1]["days_left"] == 7
    assert _incident_events(db, incident.id) == ["incident.created"]

    assert _watch(db, settings, T0 + timedelta(days=29, hours=1)) == 1 and _thresholds(db) == [30, 14, 7, 1]
    assert _expiring(db)[-1]["incident_id"] == incident.id and _expiring(db)[-1]["days_left"] == 0
    # Expired: no ssl.expiring of its own, the incident turns critical through a follow-up.
    assert _watch(db, settings, expiry) == 0 and _thresholds(db) == [30, 14, 7, 1]
    [incident] = _incidents(db)
    assert incident.severity == "critical" and incident.status == "open"
    kinds = [kind for kind, _ in _timeline(db, incident.id)]
    assert kinds == ["opened", "follow_up", "follow_up"]
    assert _timeline(db, incident.id)[-1][1] == f"Expired at {isoformat_z(expiry)}"
    assert _watch(db, settings, expiry + timedelta(days=3)) == 0

    # Renewed for 90 days: the incident resolves (once), and the thresholds of the new certificate fire later.
    renewed = expiry + timedelta(days=90)
    _discover(client, token, certificates=[_cert(renewed)])
    assert _watch(db, settings, expiry + timedelta(days=4)) == 1
    [incident] = _incidents(db)
    assert incident.status == "resolved" and _timeline(db, incident.id)[-1] == (
        "resolved", f"Renewed: now expires at {isoformat_z(renewed)}")
    assert _incident_events(db, incident.id) == ["incident.created", "incident.resolved"]
    assert _watch(db, settings, expiry + timedelta(days=5)) == 0
    assert _watch(db, settings, renewed - timedelta(days=30)) == 1 and _thresholds(db) == [30, 14, 7, 1, 30]
    assert _expiring(db)[-1]["not_after"] == isoformat_z(renewed)


def test_several_thresholds_crossed_at_once_send_only_the_tightest(client: TestClient, db: Database,
                                                                   settings: Settings, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    _discover(client, token, certificates=[_cert(T0 + timedelta(days=3), path="/etc/ssl/soon.pem"),
                                           _cert(T0 - timedelta(days=2), path="/etc/ssl/gone.pem")])
    assert _watch(db, settings, T0) == 2
    by_path = {payload["certificate"]["path"]: payload for payload in _expiring(db)}
    assert by_path["/etc/ssl/soon.pem"]["threshold_days"] == 7 and by_path["/etc/ssl/soon.pem"]["days_left"] == 3
    assert by_path["/etc/ssl/gone.pem"]["threshold_days"] == 1 and by_path["/etc/ssl/gone.pem"]["days_left"] == -2
    severities = {incident.source_key.rsplit(":", 1)[-1]: incident.severity for incident in _incidents(db)
                  if incident.source_key}
    assert severities == {"/etc/ssl/soon.pem": "warning", "/etc/ssl/gone.pem": "critical"}
    assert _watch(db, settings, T0 + timedelta(days=1)) == 0  # nothing crossed since


def test_a_renewal_still_inside_7_days_keeps_the_incident_and_a_removed_certificate_resolves_it(
        client: TestClient, db: Database, settings: Settings, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    _discover(client, token, certificates=[_cert(T0 + timedelta(days=5))])
    assert _watch(db, settings, T0) == 1
    _discover(client, token, certificates=[_cert(T0 + timedelta(days=6))])  # a short-lived replacement
    assert _watch(db, settings, T0 + timedelta(hours=1)) == 1  # its own ssl.expiring(7), on the same incident
    [incident] = _incidents(db)
    assert incident.status == "open" and [kind for kind, _ in _timeline(db, incident.id)] == ["opened", "follow_up"]
    _discover(client, token, certificates=[])
    assert _watch(db, settings, T0 + timedelta(hours=2)) == 1
    [incident] = _incidents(db)
    assert incident.status == "resolved" and _timeline(db, incident.id)[-1] == ("resolved", "No longer discovered")


def test_domains_no_certificate_covers_are_watched_by_their_ssl_expiry(client: TestClient, db: Database,
                                                                        settings: Settings, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    day = (T0 + timedelta(days=10)).date()
    wildcard = _cert(T0 + timedelta(days=10), path="/etc/ssl/wild.pem", domains=("*.example.com",))
    _discover(client, token, certificates=[wildcard], domains=[
        {"name": "api.example.com", "ssl_expiry": day.isoformat()},  # served by the wildcard certificate
        {"name": "shop.example.org", "source": "nginx", "ssl_expiry": day.isoformat()},
        {"name": "far.example.org", "ssl_expiry": (T0 + timedelta(days=60)).date().isoformat()}])
    assert _watch(db, settings, T0) == 2
    payloads = _expiring(db)
    [domain] = [payload for payload in payloads if payload["domain"]]
    assert domain["certificate"] is None and domain["domain"]["name"] == "shop.example.org"
    assert domain["threshold_days"] == 14 and domain["not_after"] == f"{day.isoformat()}T00:00:00Z"
    SslExpiringData.model_validate(domain)
    assert [payload["certificate"]["path"] for payload in payloads if payload["certificate"]] == ["/etc/ssl/wild.pem"]


def test_two_workers_at_once_send_each_notice_once(client: TestClient, db: Database, settings: Settings,
                                                   story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    _discover(client, token, certificates=[_cert(T0 + timedelta(days=n % 31), path=f"/etc/ssl/{n}.pem")
                                           for n in range(40)])
    start = threading.Barrier(2)
    made: list[int] = []

    def run() -> None:
        start.wait()
        made.append(_watch(db, settings, T0))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(made) == 40 and len(_expiring(db)) == 40
    assert len({payload["certificate"]["path"] for payload in _expiring(db)}) == 40
    assert len(_incidents(db)) == len([n for n in range(40) if n % 31 <= 7])


def test_a_certificate_that_cannot_be_processed_never_keeps_the_others_from_their_notices(
        client: TestClient, db: Database, settings: Settings, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    _discover(client, token, certificates=[_cert(T0 + timedelta(days=20), path=f"/etc/ssl/{n}.pem")
                                           for n in range(5)])
    with db.session(write=True) as session:
        # Stored names the event's certificate cannot be built from.
        session.execute(update(Certificate).where(Certificate.path == "/etc/ssl/2.pem")
                        .values(domains=[{"not": "a name"}]))
    assert _watch(db, settings, T0) == 4
    assert sorted(payload["certificate"]["path"] for payload in _expiring(db)) == [
        f"/etc/ssl/{n}.pem" for n in (0, 1, 3, 4)]
    with db.session(write=False) as session:
        [item] = quarantine.listing(session)
        assert session.scalar(select(CertificateNotice).where(CertificateNotice.name == "/etc/ssl/2.pem")) is None
    assert item.pipeline == "certwatch.expiry" and "ValidationError" in item.reason
    assert json.loads(item.payload)["item"]["name"] == "/etc/ssl/2.pem"
    assert _watch(db, settings, T0 + timedelta(minutes=5)) == 0  # set aside: not tried on every pass
    with db.session(write=False) as session:
        assert len(quarantine.listing(session)) == 1

    with db.session(write=True) as session:
        session.execute(update(Certificate).where(Certificate.path == "/etc/ssl/2.pem").values(domains=["fixed"]))
    assert quarantine.replay(db, item.id, replayers(db, settings), now=utcnow()) is True
    assert sorted(payload["certificate"]["path"] for payload in _expiring(db))[2] == "/etc/ssl/2.pem"
    assert len(_expiring(db)) == 5


def test_team_walls_each_team_hears_of_its_own_certificates_only(client: TestClient, db: Database,
                                                                 settings: Settings, story: Story) -> None:
    _, token_a = enrol(client, story.admin_a)
    _, token_b = enrol(client, story.admin_b, machine_id="m-b", hostname="b-host")
    _discover(client, token_a, certificates=[_cert(T0 + timedelta(days=6))])
    _discover(client, token_b, certificates=[_cert(T0 + timedelta(days=6))])  # the same path on B's server
    assert _watch(db, settings, T0) == 2
    [a] = _expiring(db, story.team_a)
    [b] = _expiring(db, story.team_b)
    assert a["server"]["hostname"] == "web-prod-01" and b["server"]["hostname"] == "b-host"
    assert {incident.team_id for incident in _incidents(db)} == {story.team_a, story.team_b}
    listed = client.get("/api/v1/events", headers=bearer(story.admin_b), params={"type": "ssl.expiring"})
    assert listed.status_code == 200 and [e["data"]["server"]["hostname"] for e in listed.json()["data"]] == ["b-host"]
    assert client.get(f"/api/v1/incidents/{a['incident_id']}", headers=bearer(story.admin_b)).status_code == 404


def test_a_certificate_of_an_offline_server_joins_its_outage_without_an_event(
        client: TestClient, db: Database, settings: Settings, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    _discover(client, token, certificates=[_cert(T0 + timedelta(days=5))])
    later = utcnow() + timedelta(seconds=settings.offline_after + settings.flush_interval + 10)
    assert mark_offline(db, settings, later, views=SERVER_VIEWS) == 1
    assert _watch(db, settings, T0) == 0 and _expiring(db) == []
    [incident] = _incidents(db)
    assert incident.parent_id is not None and incident.suppressed
    assert _incident_events(db, incident.id) == []


def test_the_worker_runs_it_every_five_minutes(client: TestClient, db: Database, settings: Settings,
                                               story: Story) -> None:
    assert any(isinstance(job, CertificateWatch) for name, job in periodic() if name == "certwatch.expiry")
    _, token = enrol(client, story.admin_a)
    worker = Worker(db, settings, [(name, job) for name, job in periodic() if name == "certwatch.expiry"])
    _discover(client, token, certificates=[_cert(T0 + timedelta(days=30))])
    assert worker.run_once(T0 - timedelta(minutes=1))["certwatch.expiry"] == 0
    assert worker.run_once(T0)["certwatch.expiry"] == 0  # a minute later: throttled
    assert worker.run_once(T0 + timedelta(minutes=4))["certwatch.expiry"] == 1


def _notices(db: Database) -> list[tuple[str, datetime, int]]:
    with db.session(write=False) as session:
        return [(notice.name, notice.not_after, notice.threshold_days) for notice in session.scalars(
            select(CertificateNotice).order_by(CertificateNotice.id))]


def test_notices_of_renewed_certificates_are_dropped_once_stale_and_an_expired_ones_stay(
        client: TestClient, db: Database, settings: Settings, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    old, renewed = T0 + timedelta(days=20), T0 + timedelta(days=110)
    _discover(client, token, certificates=[_cert(old, path="/etc/ssl/renewed.pem"),
                                           _cert(old, path="/etc/ssl/abandoned.pem")])
    assert _watch(db, settings, T0) == 2  # ssl.expiring(30) each
    _discover(client, token, certificates=[_cert(renewed, path="/etc/ssl/renewed.pem"),
                                           _cert(old, path="/etc/ssl/abandoned.pem")])
    job = CertificateWatch(every=0)
    job(db, settings, old + timedelta(days=59))  # not stale yet: the abandoned one crosses 14, 7, 1 and expiry
    assert ("/etc/ssl/renewed.pem", old, 30) in _notices(db)
    job(db, settings, old + timedelta(days=61))
    kept = _notices(db)
    # The renewed certificate's old notices are gone; its new expiry's own 30-day notice has come since.
    assert [notice for notice in kept if notice[0] == "/etc/ssl/renewed.pem"] == [("/etc/ssl/renewed.pem", renewed, 30)]
    assert sorted(days for name, _, days in kept if name == "/etc/ssl/abandoned.pem") == [0, 1, 7, 14, 30]
    # Still discovered with that expiry: it does not fire again.
    assert _watch(db, settings, old + timedelta(days=62)) == 0 and _thresholds(db).count(1) == 1


@pytest.fixture
def open_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True})


def test_a_webhook_receives_ssl_expiring_as_the_document_publishes_it(db: Database, open_settings: Settings,
                                                                     story: Story) -> None:
    from hostatlas.app import create_app

    with TestClient(create_app(open_settings, db=db)) as client, receiver() as hook:
        created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a),
                              json={"url": hook.url, "events": ["ssl.expiring"]})
        assert created.status_code == 201, created.text
        _, token = enrol(client, story.admin_a)
        now = utcnow()  # the webhook hears of events from its creation on
        _discover(client, token, certificates=[_cert(now + timedelta(days=30))])
        assert _watch(db, open_settings, now) == 1
        sent = asyncio.run(Dispatcher(db, open_settings).run_once())
        [request] = hook.wait_for(sent)
        document = client.get("/api/v1/openapi.json").json()
    assert _check_against(document, request) == "ssl.expiring"
    assert json.loads(request.body)["data"]["threshold_days"] == 30
