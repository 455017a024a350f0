"""Telemetry over HTTP: agents push metrics and logs, the REST API answers; bad entries drop alone."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.support import Story, bearer, enrol

NOW = int(time.time())


def _push_metrics(client: TestClient, token: str, series: list[dict[str, object]]) -> dict[str, object]:
    response = client.post("/api/v1/agent/metrics", headers=bearer(token), json={"series": series})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_points_pushed_are_queried_back(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    start = NOW - NOW % 3600 - 3600
    cpu = [[start + i * 15, float(i % 40)] for i in range(240)]
    result = _push_metrics(client, token, [
        {"metric": "cpu.percent", "labels": {}, "points": cpu},
        {"metric": "disk.used_percent", "labels": {"mount": "/"}, "points": [[start, 61.5], [start + 15, 61.7]]},
        {"metric": "disk.used_percent", "labels": {"mount": "/data"}, "points": [[start, 90.0]]},
    ])
    assert result == {"accepted": 243, "dropped": 0, "problems": []}

    answer = client.get(f"/api/v1/servers/{server_id}/metrics", headers=bearer(story.admin_a),
                        params={"metric": "cpu.percent", "from": start, "to": start + 3600, "step": "5m",
                                "agg": "max"}).json()
    assert answer["meta"] == {"from": start, "to": start + 3600, "step": 300, "agg": "max", "tier": "1m"}
    series = answer["data"][0]
    assert series["metric"] == "cpu.percent" and series["labels"] == {} and series["server"]["id"] == server_id
    expected = {bucket: max(v for t, v in cpu if bucket <= t < bucket + 300) for bucket in range(start, start + 3600,
                                                                                                 300)}
    assert {ts: value for ts, value in series["points"]} == expected

    disk = client.get(f"/api/v1/servers/{server_id}/metrics", headers=bearer(story.admin_a),
                      params={"metric": "disk.used_percent", "mount": "/", "from": start, "to": start + 60,
                              "step": "15s", "agg": "last"}).json()
    assert [(s["labels"], s["points"]) for s in disk["data"]] == [({"mount": "/"}, [[start, 61.5],
                                                                                   [start + 15, 61.7]])]
    names = client.get("/api/v1/metrics/names", headers=bearer(story.admin_a), params={"server_id": server_id})
    assert names.json()["data"] == [{"metric": "cpu.percent", "labels": {}},
                                    {"metric": "disk.used_percent", "labels": {"mount": "/"}},
                                    {"metric": "disk.used_percent", "labels": {"mount": "/data"}}]


def test_fleet_query_by_tag_and_merged(client: TestClient, story: Story) -> None:
    start = NOW - NOW % 3600 - 3600
    ids = []
    for index, value in enumerate((10.0, 30.0)):
        server_id, token = enrol(client, story.admin_a, machine_id=f"m{index}", hostname=f"web-{index}")
        client.patch(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a), json={"tags": ["prod"]})
        _push_metrics(client, token, [{"metric": "load.1", "points": [[start + 5, value], [start + 65, value + 2]]}])
        ids.append(server_id)
    params = {"metric": "load.1", "tag": "prod", "from": start, "to": start + 120, "step": "60"}
    per_server = client.get("/api/v1/metrics", headers=bearer(story.admin_a), params=params).json()["data"]
    assert sorted((s["server"]["hostname"], s["points"]) for s in per_server) == [
        ("web-0", [[start, 10.0], [start + 60, 12.0]]), ("web-1", [[start, 30.0], [start + 60, 32.0]])]
    merged = client.get("/api/v1/metrics", headers=bearer(story.admin_a),
                        params={**params, "group_by": "none"}).json()["data"]
    assert merged == [{"metric": "load.1", "labels": {}, "server": None, "points": [[start, 20.0], [start + 60, 22.0]]}]
    # Another team's id in the filter is simply not there.
    other = client.get("/api/v1/metrics", headers=bearer(story.admin_b),
                       params={**params, "tag": None, "server_id": ids}).json()
    assert other["data"] == []
    assert client.get(f"/api/v1/servers/{ids[0]}/metrics", headers=bearer(story.admin_b),
                      params={"metric": "load.1"}).status_code == 404


def test_bad_points_are_dropped_one_by_one(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    body = (b'{"series": [{"metric": "cpu.percent", "points": [[%d, 1.5], [%d, NaN], [%d, 2.5], [%d, 3.5], '
            b'["x", 1], [%d, "high"], [%d]]}, {"metric": "Bad Name!", "points": [[%d, 1]]}, '
            b'{"metric": "net.rx_bytes", "labels": {"iface": "eth0,1"}, "points": [[%d, 1]]}, 7]}'
            % (NOW - 30, NOW - 15, NOW - 60 * 86400, NOW + 86400, NOW, NOW, NOW, NOW))
    response = client.post("/api/v1/agent/metrics", headers={**bearer(token), "Content-Type": "application/json"},
                           content=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 1 and result["dropped"] == 9
    reasons = [(p.get("series"), p.get("point"), p["reason"]) for p in result["problems"]]
    assert reasons == [(0, 1, "invalid_value"), (0, 2, "too_old"), (0, 3, "in_the_future"),
                       (0, 4, "invalid_timestamp"), (0, 5, "invalid_value"), (0, 6, "invalid_point"),
                       (1, None, "invalid_metric"), (2, None, "invalid_series"), (3, None, "invalid_metric")]
    kept = client.get(f"/api/v1/servers/{server_id}/metrics", headers=bearer(story.admin_a),
                      params={"metric": "cpu.percent", "from": NOW - 120, "step": 15, "agg": "count"}).json()
    assert sum(v for _, v in kept["data"][0]["points"]) == 1


@pytest.mark.parametrize(("body", "status", "code"), [(b"not json", 400, "malformed_json"),
                                                     (b"[1,2]", 422, "validation_failed"),
                                                     (b'{"series": 5}', 422, "validation_failed"),
                                                     (b'{"entries": []}', 422, "validation_failed")])
def test_a_body_that_is_not_a_batch_is_refused_whole(client: TestClient, story: Story, body: bytes, status: int,
                                                     code: str) -> None:
    _, token = enrol(client, story.admin_a)
    response = client.post("/api/v1/agent/metrics", headers={**bearer(token), "Content-Type": "application/json"},
                           content=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


NGINX_ERROR = ('{ts} [error] 812#812: *1 connect() failed (111: Connection refused) while connecting to upstream, '
               'client: 10.0.1.5, server: app.example.com, request: "GET / HTTP/1.1", host: "app.example.com"')
NGINX_ACCESS = '10.0.1.5 - - [21/Mar/2026:14:32:01 +0000] "GET /api/v1/servers HTTP/1.1" 200 512 "-" "curl/8.0"'
SYSLOG = "Mar 21 14:32:01 web-prod-01 sshd[1234]: Accepted publickey for deploy"
JSON_LINE = '{"level": "warn", "msg": "cache miss storm", "shard": 3}'


def _mixed_lines(count: int) -> list[dict[str, object]]:
    kinds = [("/var/log/nginx/error.log", NGINX_ERROR.format(ts="2026/03/21 14:28:41")),
             ("/var/log/nginx/access.log", NGINX_ACCESS), ("/var/log/syslog", SYSLOG),
             ("/var/log/app/app.json", JSON_LINE), ("/var/log/app/plain.log", "plain words about upstream cache")]
    entries = []
    for index in range(count):
        source, line = kinds[index % len(kinds)]
        entries.append({"ts": NOW - count + index, "source": source, "line": f"{line} n{index}"})
    return entries


def test_ten_thousand_lines_searched_exactly_newest_first(client: TestClient, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    entries = _mixed_lines(10_000)
    for start in range(0, len(entries), 2000):
        result = client.post("/api/v1/agent/logs", headers=bearer(token), json={"entries": entries[start:start + 2000]})
        assert result.status_code == 200 and result.json()["accepted"] == 2000, result.text
    expected = [e["line"] for e in sorted(entries, key=lambda e: -float(e["ts"]))  # type: ignore[arg-type]
                if "upstream" in str(e["line"]).lower().split() or "upstream," in str(e["line"]).lower().split()]
    seen, cursor = [], None
    for _ in range(100):
        page = client.get("/api/v1/logs", headers=bearer(story.admin_a),
                          params={"q": "upstream", "per_page": 100, **({"cursor": cursor} if cursor else {})}).json()
        assert page["meta"]["total"] == len(expected)
        seen += [row["line"] for row in page["data"]]
        cursor = page["meta"]["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    errors = client.get("/api/v1/logs", headers=bearer(story.admin_a),
                        params={"level": "error", "source": "/var/log/nginx/error.log", "per_page": 5}).json()
    assert errors["meta"]["total"] == 2000
    row = errors["data"][0]
    assert row["level"] == "error" and row["fields"]["client"] == "10.0.1.5" and row["server"]["hostname"]
    warnings = client.get("/api/v1/logs", headers=bearer(story.admin_a), params={"level": "warning"}).json()
    assert {r["source"] for r in warnings["data"]} == {"/var/log/app/app.json"}
    assert client.get("/api/v1/logs", headers=bearer(story.admin_b), params={"q": "upstream"}).json()["meta"] == {
        "total": 0, "per_page": 25, "next_cursor": None}


def test_bad_log_entries_drop_alone(client: TestClient, story: Story) -> None:
    _, token = enrol(client, story.admin_a)
    body = (b'{"entries": [{"ts": %d, "source": "/var/log/a.log", "line": "good one"}, '
            b'{"ts": %d, "source": "/var/log/a.log", "line": "bad \xff\xfe bytes"}, '
            b'{"ts": %d, "line": "lone \\udc80 surrogate"}, {"ts": %d, "line": "far future"}, '
            b'{"line": 5}, "nope", {"ts": %d, "source": "/var/log/a.log", "line": "good two"}]}'
            % (NOW, NOW, NOW, NOW + 10 * 86400, NOW))
    response = client.post("/api/v1/agent/logs", headers={**bearer(token), "Content-Type": "application/json"},
                           content=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["dropped"]) == (2, 5)
    assert [p["reason"] for p in result["problems"]] == ["invalid_utf8", "invalid_utf8", "in_the_future",
                                                         "invalid_entry", "invalid_entry"]
    lines = client.get("/api/v1/logs", headers=bearer(story.admin_a), params={"q": "good"}).json()["data"]
    assert [row["line"] for row in lines] == ["good two", "good one"]  # same second: later id first


def test_query_parameters_are_checked(client: TestClient, story: Story) -> None:
    server_id, _ = enrol(client, story.admin_a)
    base = f"/api/v1/servers/{server_id}/metrics"
    for params, field in (({"metric": "cpu.percent", "from": "yesterday"}, "from"),
                          ({"metric": "cpu.percent", "step": "0"}, "step"),
                          ({"metric": "cpu.percent", "agg": "median"}, "agg"),
                          ({"metric": "cpu.percent", "from": "-1h", "to": "-2h"}, "from"),
                          ({}, "metric")):
        response = client.get(base, headers=bearer(story.admin_a), params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["fields"][0]["field"] == field
    month = client.get(base, headers=bearer(story.admin_a),
                       params={"metric": "cpu.percent", "from": "-30d", "step": "15"}).json()["meta"]
    assert (month["to"] - month["from"]) / month["step"] <= 1500 + 1 and month["tier"] == "1m"
    # Older than the 1-minute tier keeps: the hourly rollups answer.
    season = client.get(base, headers=bearer(story.admin_a), params={"metric": "cpu.percent", "from": "-90d"})
    assert season.json()["meta"]["tier"] == "1h" and season.json()["meta"]["step"] % 3600 == 0
    bad_level = client.get("/api/v1/logs", headers=bearer(story.admin_a), params={"level": "loud"})
    assert bad_level.status_code == 422 and bad_level.json()["error"]["fields"][0]["field"] == "level"
