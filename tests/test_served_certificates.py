"""Renewed but not reloaded: the certificate a domain's web server serves against the one on disk its
configuration names. Stored from discovery, shown on GET /api/v1/domains with ``reload_needed`` (filterable),
kept in the change history, and in the ``ssl.expiring`` of a domain whose web server still serves the old one."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostatlas.certwatch.jobs import watch_certificates
from hostatlas.certwatch.schemas import SslExpiringData
from hostatlas.clock import isoformat_z, utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.incidents.models import Incident
from hostatlas.inventory.models import Domain
from hostatlas.inventory.reload import reload_needed
from hostatlas.settings import Settings
from hostatlas.webhooks.dispatcher import Dispatcher
from tests.receiver import receiver
from tests.support import Story, bearer, enrol, get_ok
from tests.test_webhooks_contract import _check_against

T0 = utcnow().replace(microsecond=0)
OLD, NEW = "a1" * 32, "b2" * 32
PATH = "/etc/letsencrypt/live/app.example.com/fullchain.pem"


def _disk(fingerprint: str, not_after: datetime) -> dict[str, Any]:
    return {"path": PATH, "not_after": isoformat_z(not_after), "fingerprint_sha256": fingerprint}


def _served(fingerprint: str, not_after: datetime) -> dict[str, Any]:
    return {"not_after": isoformat_z(not_after), "fingerprint_sha256": fingerprint,
            "issuer": "CN=R3, O=Let's Encrypt", "subject": "CN=app.example.com"}


def _domain(name: str, *, disk: dict[str, Any] | None, served: dict[str, Any] | None,
            ssl_expiry: datetime | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "source": "nginx", "certificate": disk, "served_certificate": served}
    if ssl_expiry is not None:
        item["ssl_expiry"] = ssl_expiry.date().isoformat()
    return item


def _discover(client: TestClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/agent/discovery", headers=bearer(token), json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _by_name(client: TestClient, key: str, **params: Any) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in get_ok(client, key, "/api/v1/domains", **params)["data"]}


def test_the_rule_needs_both_certificates_and_different_fingerprints() -> None:
    assert reload_needed({"fingerprint_sha256": OLD}, {"fingerprint_sha256": NEW}) is True
    assert reload_needed({"fingerprint_sha256": OLD}, {"fingerprint_sha256": OLD.upper()}) is False
    assert reload_needed(None, {"fingerprint_sha256": NEW}) is False
    assert reload_needed({"fingerprint_sha256": OLD}, None) is False
    assert reload_needed({}, {"fingerprint_sha256": NEW}) is False


def test_domains_show_both_certificates_and_whether_a_reload_is_due(client: TestClient, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    renewed, old_expiry = T0 + timedelta(days=90), T0 + timedelta(days=5)
    _discover(client, token, {"domains": [
        _domain("stale.example.com", disk=_disk(NEW, renewed), served=_served(OLD, old_expiry), ssl_expiry=old_expiry),
        _domain("fresh.example.com", disk=_disk(NEW, renewed), served=_served(NEW.upper(), renewed)),
        _domain("plain.example.com", disk=_disk(NEW, renewed), served=None),
        {"name": "old-agent.example.com", "ssl_expiry": "2027-01-01"}],
        "certificates": [{"path": PATH, "domains": ["fresh.example.com"], "not_after": isoformat_z(renewed),
                          "fingerprint_sha256": NEW}]})

    domains = _by_name(client, story.admin_a)
    stale = domains["stale.example.com"]
    assert stale["reload_needed"] is True
    assert stale["certificate"] == {"path": PATH, "not_after": isoformat_z(renewed), "fingerprint_sha256": NEW}
    assert stale["served_certificate"] == {"not_after": isoformat_z(old_expiry), "fingerprint_sha256": OLD,
                                           "issuer": "CN=R3, O=Let's Encrypt", "subject": "CN=app.example.com"}
    # Fingerprints are kept lower-case: the same certificate whatever case the agent wrote it in.
    assert domains["fresh.example.com"]["reload_needed"] is False
    assert domains["fresh.example.com"]["served_certificate"]["fingerprint_sha256"] == NEW
    assert domains["plain.example.com"]["reload_needed"] is False
    assert domains["plain.example.com"]["served_certificate"] is None
    older = domains["old-agent.example.com"]
    assert (older["certificate"], older["served_certificate"], older["reload_needed"]) == (None, None, False)

    assert list(_by_name(client, story.admin_a, reload_needed="true")) == ["stale.example.com"]
    assert sorted(_by_name(client, story.admin_a, reload_needed="false")) == [
        "fresh.example.com", "old-agent.example.com", "plain.example.com"]
    [certificate] = get_ok(client, story.admin_a, "/api/v1/certificates")["data"]
    assert certificate["fingerprint_sha256"] == NEW
    # Another team sees none of it.
    assert get_ok(client, story.admin_b, "/api/v1/domains", reload_needed="true")["meta"]["total"] == 0


def test_a_reload_is_a_change_in_the_history_and_a_full_snapshot_replaces_the_fields(
        client: TestClient, db: Database, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    renewed, old_expiry = T0 + timedelta(days=90), T0 + timedelta(days=5)
    stale = _domain("app.example.com", disk=_disk(NEW, renewed), served=_served(OLD, old_expiry))
    assert _discover(client, token, {"domains": [stale]})["domains"]["added"] == ["app.example.com"]
    assert _discover(client, token, {"domains": [stale]})["summary"] == {"added": 0, "changed": 0, "removed": 0}

    reloaded = _domain("app.example.com", disk=_disk(NEW, renewed), served=_served(NEW, renewed))
    assert _discover(client, token, {"domains": [reloaded]})["domains"]["changed"] == ["app.example.com"]
    [change] = get_ok(client, story.admin_a, f"/api/v1/servers/{server_id}/changes", kind="domain",
                      action="changed")["data"]
    assert change["before"]["served_certificate"]["fingerprint_sha256"] == OLD
    assert change["after"]["served_certificate"] == reloaded["served_certificate"]
    assert change["before"]["certificate"] == change["after"]["certificate"] == stale["certificate"]
    assert _by_name(client, story.admin_a)["app.example.com"]["reload_needed"] is False

    # An agent that does not send the fields (an older one) replaces them with nothing: a snapshot is whole.
    _discover(client, token, {"domains": [{"name": "app.example.com", "source": "nginx"}]})
    with db.session(write=False) as session:
        row = session.scalars(select(Domain)).one()
        assert (row.certificate, row.served_certificate, row.reload_needed) == (None, None, False)


@pytest.mark.parametrize(("item", "field"), [
    ({"certificate": {"path": PATH, "fingerprint_sha256": "zz" * 32}}, "domains[0].certificate.fingerprint_sha256"),
    ({"served_certificate": {"fingerprint_sha256": OLD[:-1]}}, "domains[0].served_certificate.fingerprint_sha256"),
    ({"served_certificate": {"fingerprint_sha256": OLD + "00"}}, "domains[0].served_certificate.fingerprint_sha256"),
    ({"served_certificate": {"issuer": "CN=x"}}, "domains[0].served_certificate.fingerprint_sha256"),
    ({"served_certificate": {"fingerprint_sha256": OLD, "subject": "CN=a\x00b"}},
     "domains[0].served_certificate.subject"),
    ({"certificate": {"path": "/etc/ssl/\x00.pem", "fingerprint_sha256": OLD}}, "domains[0].certificate.path"),
    ({"certificate": {"path": PATH, "fingerprint_sha256": OLD, "not_after": "2300-01-01T00:00:00Z"}},
     "domains[0].certificate.not_after"),
    ({"served_certificate": {"fingerprint_sha256": OLD, "not_after": 1893456000}},
     "domains[0].served_certificate.not_after"),
    ({"served_certificate": {"fingerprint_sha256": OLD, "issuer": "x" * 1025}},
     "domains[0].served_certificate.issuer"),
])
def test_bad_certificate_fields_are_refused_naming_the_field(client: TestClient, story: Story, item: dict[str, Any],
                                                             field: str) -> None:
    _, token = enrol(client, story.admin_a)
    response = client.post("/api/v1/agent/discovery", headers=bearer(token),
                           json={"domains": [{"name": "app.example.com", **item}]})
    assert response.status_code == 422, response.text
    assert [f["field"] for f in response.json()["error"]["fields"]] == [field]
    bad_certificate = {"certificates": [{"path": PATH, "fingerprint_sha256": "sha256:" + OLD}]}
    response = client.post("/api/v1/agent/discovery", headers=bearer(token), json=bad_certificate)
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["certificates[0].fingerprint_sha256"]
    assert get_ok(client, story.admin_a, "/api/v1/domains")["meta"]["total"] == 0  # nothing was applied


def _expiring(db: Database) -> list[dict[str, Any]]:
    with db.session(write=False) as session:
        return [event.payload for event in session.scalars(
            select(Event).where(Event.type == "ssl.expiring").order_by(Event.id))]


def test_a_domain_still_serving_the_old_certificate_is_watched_though_the_renewed_one_covers_it(
        client: TestClient, db: Database, settings: Settings, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    renewed, old_expiry = T0 + timedelta(days=90), T0 + timedelta(days=5)
    on_disk = {"path": PATH, "subject": "CN=app.example.com", "domains": ["app.example.com", "api.example.com"],
               "not_after": isoformat_z(renewed), "fingerprint_sha256": NEW}
    _discover(client, token, {"certificates": [on_disk], "domains": [
        _domain("app.example.com", disk=_disk(NEW, renewed), served=_served(OLD, old_expiry), ssl_expiry=old_expiry),
        # Reloaded, but its (served) expiry is close too: the certificate covers it, so it sends nothing itself.
        _domain("api.example.com", disk=_disk(NEW, renewed), served=_served(NEW, renewed), ssl_expiry=old_expiry)]})

    assert watch_certificates(db, settings, T0) == 1
    [payload] = _expiring(db)
    SslExpiringData.model_validate(payload)
    assert payload["certificate"] is None and payload["threshold_days"] == 7
    domain = payload["domain"]
    assert domain["name"] == "app.example.com" and domain["reload_needed"] is True
    assert domain["served_certificate"]["fingerprint_sha256"] == OLD
    assert domain["certificate"]["fingerprint_sha256"] == NEW
    with db.session(write=False) as session:
        [incident] = session.scalars(select(Incident).where(Incident.source == "certificate")).all()
        assert incident.title == "SSL of app.example.com on web-prod-01 expires soon (renewed on disk, not reloaded)"

    # The web server reloads: the domain is covered by the certificate again, and its incident resolves.
    _discover(client, token, {"certificates": [on_disk], "domains": [
        _domain("app.example.com", disk=_disk(NEW, renewed), served=_served(NEW, renewed), ssl_expiry=renewed)]})
    assert watch_certificates(db, settings, T0 + timedelta(minutes=10)) == 1
    with db.session(write=False) as session:
        assert session.scalars(select(Incident.status)).all() == ["resolved"]


def test_an_uncovered_domain_with_matching_certificates_says_no_reload_is_due(
        client: TestClient, db: Database, settings: Settings, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    expiry = T0 + timedelta(days=20)
    _discover(client, token, {"certificates": [], "domains": [
        _domain("shop.example.org", disk=_disk(OLD, expiry), served=_served(OLD, expiry), ssl_expiry=expiry)]})
    assert watch_certificates(db, settings, T0) == 1
    [payload] = _expiring(db)
    assert payload["domain"]["reload_needed"] is False
    assert payload["domain"]["served_certificate"]["fingerprint_sha256"] == OLD


@pytest.fixture
def open_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True})


def test_the_webhook_of_a_domain_needing_a_reload_matches_the_published_document(
        db: Database, open_settings: Settings, story: Story) -> None:
    from hostatlas.app import create_app

    with TestClient(create_app(open_settings, db=db)) as client, receiver() as hook:
        created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a),
                              json={"url": hook.url, "events": ["ssl.expiring"]})
        assert created.status_code == 201, created.text
        _, token = enrol(client, story.admin_a)
        now = utcnow()
        old_expiry = now + timedelta(days=3)
        _discover(client, token, {"certificates": [], "domains": [
            _domain("app.example.com", disk=_disk(NEW, now + timedelta(days=90)), served=_served(OLD, old_expiry),
                    ssl_expiry=old_expiry)]})
        assert watch_certificates(db, open_settings, now) == 1
        sent = asyncio.run(Dispatcher(db, open_settings).run_once())
        [request] = hook.wait_for(sent)
        document = client.get("/api/v1/openapi.json").json()
    assert _check_against(document, request) == "ssl.expiring"
    data = json.loads(request.body)["data"]
    assert data["domain"]["reload_needed"] is True and data["domain"]["served_certificate"]["fingerprint_sha256"] == OLD
