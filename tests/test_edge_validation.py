"""Input is validated once, at the edge, strictly: every field, query parameter, path parameter and cursor.

Each case runs on SQLite and on PostgreSQL, whose failures differ (PostgreSQL refuses NUL in text, SQLite
overflows on integers beyond 64 bits): either way the answer is a 422 naming the field, never a 500.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from hostatlas.db.engine import Database
from hostatlas.http import runtime
from hostatlas.servers.checkins import CheckinBuffer
from tests.support import SEED_SNAPSHOT, Story, assert_envelope, bearer, enrol, host_facts

pytestmark = pytest.mark.long_running(90)

NUL = "x\u0000y"
SURROGATE = "x\ud800y"
BEYOND_64_BITS = [2**63, 10**23]
PUBLIC_URL = "http://93.184.216.34/hook"


def _post_json(client: TestClient, method: str, url: str, key: str, body: Any) -> Any:
    # json.dumps escapes lone surrogates, which httpx's own encoder cannot write as UTF-8.
    return client.request(method, url, content=json.dumps(body),
                          headers={**bearer(key), "Content-Type": "application/json"})


def _invalid_fields(response: Any) -> dict[str, str]:
    error = assert_envelope(response, 422, "validation_failed")
    fields: list[dict[str, str]] = error["fields"]  # type: ignore[assignment]
    return {entry["field"]: entry["code"] for entry in fields}


def _webhook(client: TestClient, story: Story) -> int:
    created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a), json={"url": PUBLIC_URL})
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


# --- NUL and lone surrogates in stored strings ---------------------------------------------------------------

@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
@pytest.mark.parametrize("field", ["machine_id", "hostname", "ip_address", "os", "kernel", "agent_version"])
def test_unstorable_text_in_an_enrolment_field_is_refused_naming_it(client: TestClient, story: Story, field: str,
                                                                     bad: str) -> None:
    response = _post_json(client, "POST", "/api/v1/agent/register", story.admin_a, {**host_facts(), field: bad})
    assert field in _invalid_fields(response)
    assert client.get("/api/v1/servers", headers=bearer(story.admin_a)).json()["meta"]["total"] == 0


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
@pytest.mark.parametrize("field", ["agent_version", "boot_id"])
def test_a_nul_check_in_is_refused_naming_the_field_and_the_fleet_keeps_checking_in(
        client: TestClient, db: Database, story: Story, field: str, bad: str) -> None:
    poisoned_id, poisoned = enrol(client, story.admin_a, machine_id="m-1", hostname="web-1")
    healthy_id, healthy = enrol(client, story.admin_a, machine_id="m-2", hostname="web-2")
    response = _post_json(client, "POST", "/api/v1/agent/check-in", poisoned, {field: bad, "uptime_s": 5})
    assert field in _invalid_fields(response)
    fine = client.post("/api/v1/agent/check-in", headers=bearer(healthy), json={"agent_version": "9.9.9"})
    assert fine.status_code == 200, fine.text
    runtime.of(client.app).part(CheckinBuffer).flush(db)
    servers = {row["id"]: row for row in client.get("/api/v1/servers",
                                                    headers=bearer(story.admin_a)).json()["data"]}
    assert servers[healthy_id]["agent_version"] == "9.9.9"
    assert servers[poisoned_id]["agent_version"] == "1.4.2"
    assert {row["status"] for row in servers.values()} == {"online"}


DISCOVERED_TEXT = [
    ("services", "name"), ("services", "version"), ("services", "status"), ("services", "unit"),
    ("domains", "name"), ("domains", "source"), ("containers", "id"), ("containers", "name"),
    ("containers", "image"), ("containers", "status"), ("certificates", "path"), ("certificates", "subject"),
    ("certificates", "issuer"),
]


@pytest.mark.parametrize(("kind", "field"), DISCOVERED_TEXT, ids=[".".join(case) for case in DISCOVERED_TEXT])
def test_nul_in_a_discovered_field_is_refused_naming_it(client: TestClient, story: Story, kind: str,
                                                        field: str) -> None:
    server_id, token = enrol(client, story.admin_a)
    item = {**SEED_SNAPSHOT[kind][0], field: NUL}
    response = _post_json(client, "POST", "/api/v1/agent/discovery", token, {kind: [item]})
    assert f"{kind}[0].{field}" in _invalid_fields(response)
    changes = client.get(f"/api/v1/servers/{server_id}/changes", headers=bearer(story.admin_a)).json()
    assert changes["meta"]["total"] == 0


def test_nul_in_discovered_lists_is_refused_naming_the_entry(client: TestClient, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    service = {**SEED_SNAPSHOT["services"][0], "log_paths": ["/var/log/ok.log", NUL]}
    certificate = {**SEED_SNAPSHOT["certificates"][0], "domains": [NUL]}
    response = _post_json(client, "POST", "/api/v1/agent/discovery", token,
                          {"services": [service], "certificates": [certificate]})
    assert set(_invalid_fields(response)) == {"services[0].log_paths[1]", "certificates[0].domains[0]"}


def _rest_writes(server_id: int, key_id: int, webhook_id: int) -> list[tuple[str, str, dict[str, Any], str]]:
    return [
        ("PATCH", f"/api/v1/servers/{server_id}", {"display_name": NUL}, "display_name"),
        ("PATCH", f"/api/v1/servers/{server_id}", {"tags": ["prod", NUL]}, "tags[1]"),
        ("POST", "/api/v1/api-keys", {"name": NUL, "scopes": ["servers:read"]}, "name"),
        ("POST", "/api/v1/api-keys", {"name": "ok", "scopes": [NUL]}, "scopes[0]"),
        ("PATCH", f"/api/v1/api-keys/{key_id}", {"name": SURROGATE}, "name"),
        ("POST", "/api/v1/webhooks", {"url": PUBLIC_URL, "description": NUL}, "description"),
        ("POST", "/api/v1/webhooks", {"url": PUBLIC_URL + NUL}, "url"),
        ("POST", "/api/v1/webhooks", {"url": PUBLIC_URL, "events": [NUL]}, "events[0]"),
        ("PATCH", f"/api/v1/webhooks/{webhook_id}", {"description": SURROGATE}, "description"),
        ("PUT", "/api/v1/agent-config", {"log_paths": ["/var/log/" + NUL]}, "log_paths[0]"),
        ("PUT", f"/api/v1/servers/{server_id}/agent-config", {"features": {NUL: True}}, "features"),
    ]


def test_unstorable_text_in_any_rest_write_is_refused_naming_the_field(client: TestClient, story: Story) -> None:
    server_id, _ = enrol(client, story.admin_a)
    key_id = client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).json()["data"][0]["id"]
    webhook_id = _webhook(client, story)
    for method, url, body, field in _rest_writes(server_id, key_id, webhook_id):
        response = _post_json(client, method, url, story.admin_a, body)
        assert field in _invalid_fields(response), (method, url, body)


def _filters(server_id: int, webhook_id: int) -> list[tuple[str, str]]:
    return [
        ("/api/v1/servers?q=%00", "q"), ("/api/v1/servers?tag=a%00", "tag"),
        ("/api/v1/services?name=%00", "name"), ("/api/v1/services?status=%00", "status"),
        ("/api/v1/domains?name=%00", "name"), ("/api/v1/containers?status=%00", "status"),
        ("/api/v1/containers?image=%00", "image"), ("/api/v1/certificates?q=%00", "q"),
        ("/api/v1/api-keys?q=%00", "q"), ("/api/v1/events?type=server.online&type=%00", "type[1]"),
        (f"/api/v1/webhooks/{webhook_id}/deliveries?event=%00", "event"),
        (f"/api/v1/webhooks/{webhook_id}/deliveries/del_%00", "delivery_id"),
        (f"/api/v1/servers/{server_id}/changes?sort=%00", "sort"),
        ("/api/v1/events?cursor=%00", "cursor"),
    ]


def test_nul_in_a_filter_or_path_is_refused_naming_it(client: TestClient, story: Story) -> None:
    server_id, _ = enrol(client, story.admin_a)
    webhook_id = _webhook(client, story)
    for url, field in _filters(server_id, webhook_id):
        assert field in _invalid_fields(client.get(url, headers=bearer(story.admin_a))), url


# --- integers beyond 64 bits --------------------------------------------------------------------------------

def _id_routes(big: int) -> list[tuple[str, str, str]]:
    return [
        ("GET", f"/api/v1/servers/{big}", "server_id"), ("PATCH", f"/api/v1/servers/{big}", "server_id"),
        ("DELETE", f"/api/v1/servers/{big}", "server_id"), ("GET", f"/api/v1/servers/{big}/changes", "server_id"),
        ("GET", f"/api/v1/servers/{big}/agent-config", "server_id"),
        ("PUT", f"/api/v1/servers/{big}/agent-config", "server_id"),
        ("GET", f"/api/v1/api-keys/{big}", "key_id"), ("PATCH", f"/api/v1/api-keys/{big}", "key_id"),
        ("DELETE", f"/api/v1/api-keys/{big}", "key_id"), ("POST", f"/api/v1/api-keys/{big}/rotate", "key_id"),
        ("GET", f"/api/v1/webhooks/{big}", "webhook_id"), ("PATCH", f"/api/v1/webhooks/{big}", "webhook_id"),
        ("DELETE", f"/api/v1/webhooks/{big}", "webhook_id"), ("POST", f"/api/v1/webhooks/{big}/test", "webhook_id"),
        ("POST", f"/api/v1/webhooks/{big}/rotate-secret", "webhook_id"),
        ("GET", f"/api/v1/webhooks/{big}/deliveries", "webhook_id"),
        ("GET", f"/api/v1/webhooks/{big}/deliveries/del_1", "webhook_id"),
        ("GET", f"/api/v1/services?server_id={big}", "server_id"),
        ("GET", f"/api/v1/domains?server_id={big}", "server_id"),
        ("GET", f"/api/v1/containers?server_id={big}", "server_id"),
        ("GET", f"/api/v1/certificates?server_id={big}", "server_id"),
        ("GET", f"/api/v1/events?server_id={big}", "server_id"),
        ("GET", f"/api/v1/events?after_id={big}", "after_id"),
    ]


@pytest.mark.parametrize("big", BEYOND_64_BITS, ids=["2^63", "10^23"])
def test_ids_and_integer_filters_beyond_64_bits_are_refused_naming_them(client: TestClient, story: Story,
                                                                         big: int) -> None:
    for method, url, field in _id_routes(big):
        body = {"name": "x"} if method == "PATCH" else ({} if method in ("PUT", "POST") else None)
        response = client.request(method, url, headers=bearer(story.admin_a), json=body)
        assert field in _invalid_fields(response), (method, url)


@pytest.mark.parametrize("big", [2**31, 2**63 - 1], ids=["2^31", "2^63-1"])
def test_ids_within_64_bits_but_beyond_32_are_simply_not_found(client: TestClient, story: Story, big: int) -> None:
    # PostgreSQL's id columns were 32-bit: these answered 500 "integer out of range" (migration 0007).
    for method, url, field in _id_routes(big):
        if "?" in url:
            response = client.request(method, url, headers=bearer(story.admin_a))
            assert response.status_code == 200 and response.json()["data"] == [], (method, url)
            continue
        body = {"name": "x"} if method == "PATCH" else ({} if method in ("PUT", "POST") else None)
        response = client.request(method, url, headers=bearer(story.admin_a), json=body)
        # 404, or 422 for a body this route does not take, but never for the id itself.
        assert response.status_code in (404, 422), (method, url, response.status_code)
        named = {entry["field"] for entry in response.json()["error"].get("fields") or []}
        assert field not in named, (method, url)


# --- booleans are not integers, numbers are not moments -----------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [("cpu_cores", True), ("ram_total_mb", False), ("cpu_cores", 4.0)])
def test_a_boolean_or_float_enrolment_count_is_refused(client: TestClient, story: Story, field: str,
                                                       value: object) -> None:
    response = client.post("/api/v1/agent/register", headers=bearer(story.admin_a),
                           json={**host_facts(), field: value})
    assert _invalid_fields(response).get(field) == "int_type"


def test_a_boolean_uptime_check_in_is_refused(client: TestClient, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    response = client.post("/api/v1/agent/check-in", headers=bearer(token), json={"uptime_s": True})
    assert _invalid_fields(response) == {"uptime_s": "int_type"}


def test_a_boolean_pid_or_port_is_refused(client: TestClient, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    service = {**SEED_SNAPSHOT["services"][0], "pid": True, "ports": [80, False]}
    response = client.post("/api/v1/agent/discovery", headers=bearer(token), json={"services": [service]})
    assert set(_invalid_fields(response)) == {"services[0].pid", "services[0].ports[1]"}


def test_a_pid_beyond_a_32_bit_column_is_refused(client: TestClient, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    service = {**SEED_SNAPSHOT["services"][0], "pid": 2**31}
    response = client.post("/api/v1/agent/discovery", headers=bearer(token), json={"services": [service]})
    assert set(_invalid_fields(response)) == {"services[0].pid"}


def test_rotating_a_key_with_grace_false_is_refused_and_rotates_nothing(client: TestClient, story: Story) -> None:
    key_id = client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).json()["data"][0]["id"]
    response = client.post(f"/api/v1/api-keys/{key_id}/rotate", headers=bearer(story.admin_a),
                           json={"grace_seconds": False})
    assert _invalid_fields(response) == {"grace_seconds": "int_type"}
    keys = client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).json()["data"]
    assert all(key["rotated_at"] is None for key in keys)


def test_boolean_numbers_and_numeric_booleans_are_refused_in_settings(client: TestClient, story: Story) -> None:
    webhook_id = _webhook(client, story)
    rotate = client.post(f"/api/v1/webhooks/{webhook_id}/rotate-secret", headers=bearer(story.admin_a),
                         json={"grace_seconds": True})
    assert _invalid_fields(rotate) == {"grace_seconds": "int_type"}
    too_long = client.post(f"/api/v1/webhooks/{webhook_id}/rotate-secret", headers=bearer(story.admin_a),
                           json={"grace_seconds": 2**62})
    assert _invalid_fields(too_long) == {"grace_seconds": "less_than_equal"}
    enable = client.patch(f"/api/v1/webhooks/{webhook_id}", headers=bearer(story.admin_a), json={"enabled": 0})
    assert _invalid_fields(enable) == {"enabled": "bool_type"}
    config = client.put("/api/v1/agent-config", headers=bearer(story.admin_a),
                        json={"metrics_interval": True, "features": {"logs": 1}})
    assert set(_invalid_fields(config)) == {"metrics_interval", "features.logs"}


@pytest.mark.parametrize("not_after", [1893456000, "1893456000", True, "1900-01-01T00:00:00Z", "9999-01-01T00:00:00"])
def test_a_certificate_expiry_must_be_a_bounded_date_and_time_string(client: TestClient, story: Story,
                                                                     not_after: object) -> None:
    _, token = enrol(client, story.admin_a)
    certificate = {**SEED_SNAPSHOT["certificates"][0], "not_after": not_after}
    response = client.post("/api/v1/agent/discovery", headers=bearer(token), json={"certificates": [certificate]})
    assert set(_invalid_fields(response)) == {"certificates[0].not_after"}


@pytest.mark.parametrize("ssl_expiry", [1786665600, True, "0001-01-01", "2026-13-01"])
def test_a_domain_expiry_must_be_a_bounded_date_string(client: TestClient, story: Story, ssl_expiry: object) -> None:
    _, token = enrol(client, story.admin_a)
    domain = {**SEED_SNAPSHOT["domains"][0], "ssl_expiry": ssl_expiry}
    response = client.post("/api/v1/agent/discovery", headers=bearer(token), json={"domains": [domain]})
    assert set(_invalid_fields(response)) == {"domains[0].ssl_expiry"}


def test_moments_are_still_accepted_as_iso_strings_with_or_without_a_zone(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    certificates = [{**SEED_SNAPSHOT["certificates"][0], "path": f"/c{n}", "not_after": moment}
                    for n, moment in enumerate(["2030-01-01T00:00:00Z", "2030-01-01T02:00:00+02:00",
                                                "2030-01-01T00:00:00", "2030-01-01t00:00:00z"])]
    domains = [{**SEED_SNAPSHOT["domains"][0], "ssl_expiry": "2030-01-01T23:00:00Z"}]
    response = client.post("/api/v1/agent/discovery", headers=bearer(token),
                           json={"certificates": certificates, "domains": domains})
    assert response.status_code == 200, response.text
    detail = client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).json()
    assert {c["not_after"] for c in detail["certificates"]} == {"2030-01-01T00:00:00Z"}
    assert detail["domains"][0]["ssl_expiry"] == "2030-01-01"
    since = client.get("/api/v1/events?since=2020-01-01T00:00:00Z", headers=bearer(story.admin_a))
    assert since.status_code == 200 and since.json()["meta"]["total"] >= 1
    assert "since" in _invalid_fields(client.get("/api/v1/events?since=1577836800", headers=bearer(story.admin_a)))


# --- forged cursors -----------------------------------------------------------------------------------------

def _cursor(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


FORGED = [
    ("/api/v1/servers", "created_at", b'["created_at", "not-a-date", 1]'),
    ("/api/v1/servers", "created_at", b'["created_at", {"dt": "not-a-date"}, 1]'),
    ("/api/v1/servers", "created_at", b'["created_at", {"dt": "0001-01-01T00:00:00+00:00"}, 1]'),
    ("/api/v1/servers", "created_at", b'["created_at", 1e30, 1]'),
    ("/api/v1/servers", "created_at", b'["created_at", {"dt": "2026-01-01T00:00:00Z"}, 9223372036854775808]'),
    ("/api/v1/servers", "created_at", b'["created_at", {"dt": "2026-01-01T00:00:00Z"}, 99999999999999999999999]'),
    ("/api/v1/servers", "created_at", b'["created_at", {"dt": "2026-01-01T00:00:00Z"}, true]'),
    ("/api/v1/servers", "hostname", b'["hostname", 5, 1]'),
    ("/api/v1/servers", "hostname", b'["hostname", "a\\u0000b", 1]'),
    ("/api/v1/servers", "hostname", b'["hostname", "a\\ud800b", 1]'),
    ("/api/v1/servers", "hostname", b'["hostname", {"dt": "2026-01-01T00:00:00Z"}, 1]'),
    ("/api/v1/servers", "-id", b'["-id", null, 18446744073709551615]'),
    ("/api/v1/servers", "-id", b'["-id", null, 0]'),
    ("/api/v1/servers", "-id", b'["-id", null, 1.5]'),
    ("/api/v1/events", "-id", b'["-id", null, 1e30]'),
    ("/api/v1/events", "created_at", b'["created_at", 1e30, 1e30]'),
    ("/api/v1/api-keys", "name", b'["name", ["a"], 1]'),
    ("/api/v1/api-keys", "name", b'["name", "a", 1, "extra"]'),
    ("/api/v1/api-keys", "name", b'{"name": "a"}'),
    ("/api/v1/webhooks", "created_at", b'["created_at", {"dt": 5}, 1]'),
]


@pytest.mark.parametrize(("url", "sort", "payload"), FORGED, ids=[case[2].decode() for case in FORGED])
def test_a_forged_cursor_is_refused_as_invalid(client: TestClient, story: Story, url: str, sort: str,
                                               payload: bytes) -> None:
    enrol(client, story.admin_a)
    response = client.get(url, headers=bearer(story.admin_a), params={"sort": sort, "cursor": _cursor(payload)})
    assert _invalid_fields(response) == {"cursor": "invalid_cursor"}


def test_a_naive_cursor_moment_is_read_as_utc(client: TestClient, story: Story) -> None:
    enrol(client, story.admin_a)
    cursor = _cursor(orjson.dumps(["created_at", {"dt": "2000-01-01T00:00:00"}, 1]))
    response = client.get("/api/v1/servers", headers=bearer(story.admin_a),
                          params={"sort": "created_at", "cursor": cursor})
    assert response.status_code == 200 and len(response.json()["data"]) == 1


@pytest.mark.parametrize("sort", ["id", "-id", "hostname", "-created_at", "last_seen_at", "status"])
def test_real_cursors_still_page_through_every_row_once(client: TestClient, story: Story, sort: str) -> None:
    made = {enrol(client, story.admin_a, machine_id=f"m-{n}", hostname=f"web-{n % 3}")[0] for n in range(5)}
    seen: list[int] = []
    params: dict[str, Any] = {"sort": sort, "per_page": 2}
    while True:
        page = client.get("/api/v1/servers", headers=bearer(story.admin_a), params=params)
        assert page.status_code == 200, page.text
        seen += [row["id"] for row in page.json()["data"]]
        if not page.json()["meta"]["next_cursor"]:
            break
        params["cursor"] = page.json()["meta"]["next_cursor"]
    assert sorted(seen) == sorted(made)


# --- every invalid field in one answer ----------------------------------------------------------------------

def test_a_webhook_with_a_bad_description_and_an_unknown_event_lists_both(client: TestClient, story: Story) -> None:
    response = client.post("/api/v1/webhooks", headers=bearer(story.admin_a),
                           json={"url": PUBLIC_URL, "description": "d" * 501, "events": ["server.exploded"]})
    assert _invalid_fields(response) == {"description": "string_too_long", "events": "unknown_event"}


def test_a_webhook_update_with_a_null_url_and_an_unknown_event_lists_both(client: TestClient, story: Story) -> None:
    webhook_id = _webhook(client, story)
    response = client.patch(f"/api/v1/webhooks/{webhook_id}", headers=bearer(story.admin_a),
                            json={"url": None, "events": [], "description": "d" * 501})
    assert _invalid_fields(response) == {"url": "null", "events": "empty", "description": "string_too_long"}


@pytest.mark.parametrize("target", ["team", "server"])
def test_agent_config_with_a_bad_interval_and_an_unknown_feature_lists_both(client: TestClient, story: Story,
                                                                            target: str) -> None:
    server_id, _ = enrol(client, story.admin_a)
    url = "/api/v1/agent-config" if target == "team" else f"/api/v1/servers/{server_id}/agent-config"
    response = client.put(url, headers=bearer(story.admin_a),
                          json={"metrics_interval": 1, "features": {"teleport": True}})
    assert _invalid_fields(response) == {"metrics_interval": "greater_than_equal", "features": "unknown_feature"}
