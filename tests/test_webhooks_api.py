"""``/api/v1/webhooks``: create, list, update, rotate, test, deliveries and their log; SSRF; team walls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from hostatlas.app import create_app
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.errors import InvalidInput
from hostatlas.events import service as events
from hostatlas.http import runtime
from hostatlas.settings import Settings
from hostatlas.webhooks import service
from hostatlas.webhooks.dispatcher import Dispatcher
from hostatlas.webhooks.service import Destinations
from tests.receiver import Reply, receiver
from tests.support import Story, assert_envelope, bearer

PUBLIC_ADDRESS = "93.184.216.34"


@pytest.fixture
def open_client(db: Database, settings: Settings) -> Iterator[TestClient]:
    """A platform whose webhooks may target loopback, where the test receivers listen."""
    app = create_app(settings.model_copy(update={"webhook_allow_private": True}), db=db)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _dispatch(db: Database, settings: Settings, **kwargs: object) -> int:
    return asyncio.run(Dispatcher(db, settings.model_copy(update={"webhook_allow_private": True}),
                                  **kwargs).run_once())  # type: ignore[arg-type]


def test_create_shows_the_secret_once_and_lists_without_it(client: TestClient, story: Story) -> None:
    created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a), json={
        "url": f"http://{PUBLIC_ADDRESS}/hook", "events": ["server.offline"], "description": "pager"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["events"] == ["server.offline"] and body["enabled"]
    listed = client.get("/api/v1/webhooks", headers=bearer(story.admin_a)).json()
    assert [hook["id"] for hook in listed["data"]] == [body["id"]]
    assert "secret" not in listed["data"][0]
    fetched = client.get(f"/api/v1/webhooks/{body['id']}", headers=bearer(story.admin_a)).json()
    assert "secret" not in fetched and fetched["url"] == f"http://{PUBLIC_ADDRESS}/hook"
    # All events when the list is left out.
    everything = client.post("/api/v1/webhooks", headers=bearer(story.admin_a),
                             json={"url": f"https://{PUBLIC_ADDRESS}/all"}).json()
    assert everything["events"] is None


def test_bad_input_gets_field_errors(client: TestClient, story: Story) -> None:
    cases = [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": f"http://user:pw@{PUBLIC_ADDRESS}/"}, "url"),
        ({"url": f"http://{PUBLIC_ADDRESS}/", "events": ["server.exploded"]}, "events"),
        ({"url": f"http://{PUBLIC_ADDRESS}/", "events": []}, "events"),
        ({"url": f"http://{PUBLIC_ADDRESS}/", "extra": 1}, "extra"),
    ]
    for payload, field in cases:
        answer = client.post("/api/v1/webhooks", headers=bearer(story.admin_a), json=payload)
        body = assert_envelope(answer, 422, "validation_failed")
        assert field in [problem["field"] for problem in body["fields"]], (payload, body)  # type: ignore[index]
    assert client.get("/api/v1/webhooks", headers=bearer(story.admin_a)).json()["data"] == []


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]/", "http://localhost:8080/", "http://[::ffff:10.0.0.1]/",
                                 "http://0.0.0.0/", "http://224.0.0.1/"])
def test_internal_destinations_are_refused(client: TestClient, story: Story, url: str) -> None:
    answer = client.post("/api/v1/webhooks", headers=bearer(story.admin_a), json={"url": url})
    body = assert_envelope(answer, 422, "validation_failed")
    [problem] = body["fields"]  # type: ignore[index]
    assert problem["field"] == "url" and problem["code"] == "invalid_destination"
    hook = client.post("/api/v1/webhooks", headers=bearer(story.admin_a),
                       json={"url": f"http://{PUBLIC_ADDRESS}/"}).json()
    moved = client.patch(f"/api/v1/webhooks/{hook['id']}", headers=bearer(story.admin_a), json={"url": url})
    assert_envelope(moved, 422, "validation_failed")


def test_a_name_that_resolves_internal_only_later_is_refused_at_delivery(client: TestClient, story: Story,
                                                                         db: Database, settings: Settings) -> None:
    dns = {"hooks.example.test": [PUBLIC_ADDRESS]}

    def resolver(host: str, port: int) -> list[str]:
        return dns[host]

    app_runtime = runtime.of(client.app)
    app_runtime.add(Destinations(app_runtime.settings.webhook_allow_private, resolver=resolver))
    with receiver() as hook:
        port = hook.url.split(":")[2].split("/")[0]
        created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a),
                              json={"url": f"http://hooks.example.test:{port}/hook"})
        assert created.status_code == 201, created.text
        dns["hooks.example.test"] = ["127.0.0.1"]  # rebinding: now it points inside
        client.post(f"/api/v1/webhooks/{created.json()['id']}/test", headers=bearer(story.admin_a))
        strict = settings.model_copy(update={"webhook_allow_private": False})
        assert asyncio.run(Dispatcher(db, strict, resolver=resolver).run_once()) == 1
        assert hook.requests == []
    deliveries = client.get(f"/api/v1/webhooks/{created.json()['id']}/deliveries",
                            headers=bearer(story.admin_a)).json()["data"]
    detail = client.get(f"/api/v1/webhooks/{created.json()['id']}/deliveries/{deliveries[0]['id']}",
                        headers=bearer(story.admin_a)).json()
    assert detail["attempts"][0]["error"] == "blocked_address"
    assert "127.0.0.1" in detail["attempts"][0]["error_detail"]


def test_delivery_log_filters_details_and_redelivery(open_client: TestClient, story: Story, db: Database,
                                                     settings: Settings) -> None:
    client = open_client
    with receiver(Reply(500, b"nope"), default=Reply(200, b"fine")) as hook:
        created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a), json={"url": hook.url}).json()
        webhook_id = created["id"]
        test = client.post(f"/api/v1/webhooks/{webhook_id}/test", headers=bearer(story.admin_a))
        assert test.status_code == 202 and test.json()["event"] == "webhook.test"
        with db.session(write=True) as session:
            events.record(session, team_id=story.team_a, type=events.SERVER_OFFLINE, resource_type="server",
                          resource_id=1, payload={"server": {"id": 1}}, at=utcnow(), server_id=1)
        assert _dispatch(db, settings) == 2
        hook.wait_for(2)

        def deliveries(**params: str) -> list[dict[str, object]]:
            answer = client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=bearer(story.admin_a),
                                params=params)
            assert answer.status_code == 200, answer.text
            return list(answer.json()["data"])

        assert len(deliveries()) == 2
        [failed_one] = deliveries(status="pending")  # the 500 is waiting for its retry
        [succeeded] = deliveries(status="succeeded")
        assert deliveries(status="failed") == []
        assert {d["event"] for d in deliveries(event="server.offline")} == {"server.offline"}
        detail = client.get(f"/api/v1/webhooks/{webhook_id}/deliveries/{failed_one['id']}",
                            headers=bearer(story.admin_a)).json()
        [attempt] = detail["attempts"]
        assert attempt["response_status"] == 500 and attempt["response_body"] == "nope"
        assert attempt["error"] == "http_status" and attempt["duration_ms"] >= 0
        assert attempt["request_headers"]["X-HostAtlas-Delivery"] == failed_one["id"]
        assert detail["request_body"]["delivery_id"] == failed_one["id"]
        again = client.post(f"/api/v1/webhooks/{webhook_id}/deliveries/{succeeded['id']}/redeliver",
                            headers=bearer(story.admin_a))
        assert again.status_code == 202 and again.json()["redelivery_of"] == succeeded["id"]
        assert again.json()["id"] != succeeded["id"]
        assert _dispatch(db, settings) == 1
        resent = hook.wait_for(3)[-1]
        [original] = [orjson.loads(r.body) for r in hook.requests[:2]
                      if orjson.loads(r.body)["delivery_id"] == succeeded["id"]]
        assert orjson.loads(resent.body)["data"] == original["data"]
        assert orjson.loads(resent.body)["delivery_id"] == again.json()["id"]


def test_disable_and_reenable_through_the_api(open_client: TestClient, story: Story, db: Database,
                                              settings: Settings) -> None:
    client = open_client
    with receiver() as hook:
        webhook_id = client.post("/api/v1/webhooks", headers=bearer(story.admin_a), json={"url": hook.url}).json()["id"]
        off = client.patch(f"/api/v1/webhooks/{webhook_id}", headers=bearer(story.admin_a), json={"enabled": False})
        assert off.status_code == 200 and off.json()["enabled"] is False
        with db.session(write=True) as session:
            events.record(session, team_id=story.team_a, type=events.SERVER_OFFLINE, resource_type="server",
                          resource_id=1, payload={}, at=utcnow(), server_id=1)
        _dispatch(db, settings)
        assert hook.requests == []
        on = client.patch(f"/api/v1/webhooks/{webhook_id}", headers=bearer(story.admin_a), json={"enabled": True})
        assert on.json()["enabled"] is True
        with db.session(write=True) as session:
            events.record(session, team_id=story.team_a, type=events.SERVER_ONLINE, resource_type="server",
                          resource_id=1, payload={}, at=utcnow(), server_id=1)
        assert _dispatch(db, settings) == 1
        assert [orjson.loads(r.body)["event"] for r in hook.wait_for(1)] == ["server.online"]


def test_rotate_returns_a_new_secret_and_reports_the_grace(client: TestClient, story: Story) -> None:
    created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a),
                          json={"url": f"http://{PUBLIC_ADDRESS}/"}).json()
    rotated = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", headers=bearer(story.admin_a),
                          json={"grace_seconds": 3600})
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != created["secret"] and rotated.json()["previous_secret_expires_at"]
    bad = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", headers=bearer(story.admin_a),
                      json={"grace_seconds": -1})
    assert_envelope(bad, 422, "validation_failed")


def test_scopes_and_team_walls(client: TestClient, story: Story) -> None:
    created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a),
                          json={"url": f"http://{PUBLIC_ADDRESS}/"}).json()
    assert_envelope(client.get("/api/v1/webhooks", headers=bearer(story.reader_a)), 403, "missing_scope")
    reader = story.key(story.team_a, ["webhooks:read"])
    assert client.get("/api/v1/webhooks", headers=bearer(reader)).status_code == 200
    assert_envelope(client.post("/api/v1/webhooks", headers=bearer(reader), json={"url": "http://x.test/"}),
                    403, "missing_scope")
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test"), ("POST", "/rotate-secret"),
                         ("GET", "/deliveries")]:
        answer = client.request(method, f"/api/v1/webhooks/{created['id']}{path}", headers=bearer(story.admin_b),
                                json={} if method in ("PATCH", "POST") else None)
        assert_envelope(answer, 404, "webhook_not_found")
    assert client.get("/api/v1/webhooks", headers=bearer(story.admin_b)).json()["data"] == []
    deleted = client.delete(f"/api/v1/webhooks/{created['id']}", headers=bearer(story.admin_a))
    assert deleted.status_code == 204
    assert_envelope(client.get(f"/api/v1/webhooks/{created['id']}", headers=bearer(story.admin_a)), 404,
                    "webhook_not_found")


def test_a_field_left_out_is_kept_and_null_is_refused_but_for_events(client: TestClient, story: Story,
                                                                     db: Database) -> None:
    created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a),
                          json={"url": f"http://{PUBLIC_ADDRESS}/", "events": ["server.offline"]}).json()
    path = f"/api/v1/webhooks/{created['id']}"
    refused = client.patch(path, headers=bearer(story.admin_a), json={"url": None, "description": None})
    fields = assert_envelope(refused, 422, "validation_failed")["fields"]
    assert isinstance(fields, list)
    assert sorted((problem["field"], problem["code"]) for problem in fields) == [("description", "null"),
                                                                                 ("url", "null")]
    everything = client.patch(path, headers=bearer(story.admin_a), json={"events": None})
    assert everything.status_code == 200 and everything.json()["events"] is None
    assert everything.json()["url"] == created["url"]
    # The rule is the service's: a caller other than the API cannot store a null either.
    with db.session(write=True) as session, pytest.raises(InvalidInput) as refusal:
        service.update_webhook(session, service.get_webhook(session, team_id=story.team_a, webhook_id=created["id"]),
                               {"enabled": None}, utcnow(), Destinations(allow_private=False))
    assert [(problem.field, problem.code) for problem in refusal.value.fields] == [("enabled", "null")]
