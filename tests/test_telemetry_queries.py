"""Telemetry reads refuse hostile parameters with a 422 naming the field, on SQLite and PostgreSQL, never a 500.

The metric and log reads reach three stores (the servers' database for ids and tags, the telemetry store for
series and the FTS5 index for words), each failing its own way on NUL, integers beyond 64 bits and
non-finite times: every parameter and cursor is checked before any of them is asked.
"""

from __future__ import annotations

import base64
import time

import pytest
from fastapi.testclient import TestClient

from tests.support import Story, assert_envelope, bearer, enrol

pytestmark = pytest.mark.long_running(40)

NOW = int(time.time())
BEYOND_64_BITS = str(2**64)


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_TIMES = ["NaN", "nan", "inf", "-inf", "Infinity", "1e400", "-1e999", "99999999999999", "-1",
             "-99999999999w", "0001-01-01T00:00:00", "9999-12-31"]
BAD_LOG_CURSORS = [b"[1e30, 1e30]", b"[1.5, 1e30]", b"[1e30, 5]", b'["x", 1]', b"[1.5, true]", b"[1.5, 0]",
                   b"[1.5, 9223372036854775808]", b"[true, 1]", b"[1.5]", b'{"ts": 1}', b"[NaN, 1]", b"not json"]

# (path template, query parameters, the field the 422 names)
CASES: list[tuple[str, dict[str, str], str]] = [
    ("/api/v1/logs", {"q": "a\x00b"}, "q"),
    ("/api/v1/logs", {"source": "/var/log/\x00"}, "source"),
    ("/api/v1/logs", {"server_id": BEYOND_64_BITS}, "server_id"),
    ("/api/v1/logs", {"server_id": "0"}, "server_id"),
    ("/api/v1/logs", {"cursor": "x\x00y"}, "cursor"),
    *[("/api/v1/logs", {"cursor": _cursor(raw)}, "cursor") for raw in BAD_LOG_CURSORS],
    *[("/api/v1/logs", {"from": value}, "from") for value in BAD_TIMES],
    ("/api/v1/logs", {"to": "NaN"}, "to"),
    ("/api/v1/servers/{server}/metrics", {"metric": "cpu.percent", "from": "NaN"}, "from"),
    ("/api/v1/servers/{server}/metrics", {"metric": "cpu.percent", "to": "1e400"}, "to"),
    ("/api/v1/servers/{server}/metrics", {"metric": "cpu.percent", "step": "99999999999999999999"}, "step"),
    ("/api/v1/servers/{server}/metrics", {"metric": "cpu.percent", "step": "9999999w"}, "step"),
    ("/api/v1/servers/{server}/metrics", {"metric": "cpu\x00"}, "metric"),
    ("/api/v1/servers/{server}/metrics", {"metric": "disk.used_percent", "mount": "/\x00"}, "mount"),
    (f"/api/v1/servers/{BEYOND_64_BITS}/metrics", {"metric": "cpu.percent"}, "server_id"),
    ("/api/v1/servers/0/metrics", {"metric": "cpu.percent"}, "server_id"),
    ("/api/v1/metrics", {"metric": "cpu.percent", "server_id": BEYOND_64_BITS}, "server_id"),
    ("/api/v1/metrics", {"metric": "cpu.percent", "tag": "prod\x00"}, "tag"),
    ("/api/v1/metrics", {"metric": "cpu.percent", "step": str(10**30)}, "step"),
    ("/api/v1/metrics", {"metric": "cpu.percent", "from": "-1e999d"}, "from"),
    ("/api/v1/metrics/names", {"server_id": BEYOND_64_BITS}, "server_id"),
    ("/api/v1/metrics/names", {"server_id": "{server}", "cursor": _cursor(b"[1, 2]")}, "cursor"),
    ("/api/v1/metrics/names", {"server_id": "{server}", "cursor": _cursor(b'["cpu", "\\u0000"]')}, "cursor"),
]


@pytest.mark.parametrize(("path", "params", "field"), CASES,
                         ids=[f"{c[0].removeprefix('/api/v1/')}-{c[1]!r}" for c in CASES])
def test_a_hostile_telemetry_parameter_is_a_422_naming_it(client: TestClient, story: Story, path: str,
                                                          params: dict[str, str], field: str) -> None:
    server_id, _ = enrol(client, story.admin_a)
    params = {name: value.replace("{server}", str(server_id)) for name, value in params.items()}
    response = client.get(path.replace("{server}", str(server_id)), headers=bearer(story.admin_a), params=params)
    error = assert_envelope(response, 422, "validation_failed")
    assert [entry["field"].split("[")[0] for entry in error["fields"]] == [field]  # type: ignore[union-attr]


def test_every_invalid_parameter_is_named_at_once(client: TestClient, story: Story) -> None:
    server_id, _ = enrol(client, story.admin_a)
    response = client.get(f"/api/v1/servers/{server_id}/metrics", headers=bearer(story.admin_a),
                          params={"metric": "disk.used_percent", "from": "NaN", "step": "0", "mount": "\x00",
                                  "device": "sd\x00a"})
    error = assert_envelope(response, 422, "validation_failed")
    assert sorted(entry["field"] for entry in error["fields"]) == ["device", "from", "mount", "step"]  # type: ignore[union-attr]


@pytest.mark.parametrize("path", ["metrics", "logs"])
def test_malformed_json_on_an_ingestion_endpoint_is_a_400(client: TestClient, story: Story, path: str) -> None:
    _, token = enrol(client, story.admin_a)
    response = client.post(f"/api/v1/agent/{path}", headers={**bearer(token), "Content-Type": "application/json"},
                           content=b'{"series": [')
    assert_envelope(response, 400, "malformed_json")


def test_metric_names_are_a_paged_list(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    series = [{"metric": "disk.used_percent", "labels": {"mount": mount}, "points": [[NOW - 5, 1.0]]}
              for mount in ("/", "/data", "/var")] + [{"metric": "cpu.percent", "points": [[NOW - 5, 1.0]]}]
    assert client.post("/api/v1/agent/metrics", headers=bearer(token), json={"series": series}).json()["accepted"] == 4
    first = client.get("/api/v1/metrics/names", headers=bearer(story.admin_a),
                       params={"server_id": server_id, "per_page": 3}).json()
    assert first["data"] == [{"metric": "cpu.percent", "labels": {}},
                             {"metric": "disk.used_percent", "labels": {"mount": "/"}},
                             {"metric": "disk.used_percent", "labels": {"mount": "/data"}}]
    assert first["meta"]["total"] == 4 and first["meta"]["per_page"] == 3
    rest = client.get("/api/v1/metrics/names", headers=bearer(story.admin_a),
                      params={"server_id": server_id, "per_page": 3, "cursor": first["meta"]["next_cursor"]}).json()
    assert rest == {"data": [{"metric": "disk.used_percent", "labels": {"mount": "/var"}}],
                    "meta": {"total": 4, "per_page": 3, "next_cursor": None}}


def test_a_search_of_separators_only_finds_every_line(client: TestClient, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    client.post("/api/v1/agent/logs", headers=bearer(token), json={"entries": [{"ts": NOW, "line": "one line"}]})
    found = client.get("/api/v1/logs", headers=bearer(story.admin_a), params={"q": " \n\u2028"})
    assert found.status_code == 200, found.text
    assert [row["line"] for row in found.json()["data"]] == ["one line"]
