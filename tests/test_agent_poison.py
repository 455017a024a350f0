"""Hostile values on the synchronous agent endpoints (check-in, register, discovery): each is refused with a
4xx, and another team's agent sending right after is stored and readable. Metrics and logs have their own
poison tests (test_telemetry_poison.py), since a spool and a storer sit between them and the store.

The values are spliced into the body as raw JSON text, so that every spelling a JSON parser might accept
reaches the server as sent: numbers past any integer or float type, NaN and Infinity in their non-standard
spellings, NUL, a lone surrogate (escaped and as raw bytes), invalid UTF-8, deep nesting and wrong types.
"""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from hostatlas.app import flush_buffers
from hostatlas.http import runtime
from tests.support import SEED_SNAPSHOT, Story, bearer, enrol, host_facts

HOSTILE: dict[str, bytes] = {
    "huge integer": b"9" * 401,
    "beyond 64 bits": str(2**64).encode(),
    "1e400": b"1e400",
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "-Infinity": b"-Infinity",
    "NUL": b'"x\\u0000y"',
    "escaped lone surrogate": b'"\\ud800"',
    "raw lone surrogate": b'"\xed\xa0\x80"',
    "invalid UTF-8": b'"\xff\xfe"',
    "deep nesting": b"[" * 50_000 + b"]" * 50_000,
    "wrong type": b'{"an": "object"}',
}
MARK = b'"__HOSTILE__"'


def _bodies(path: str) -> list[bytes]:
    """The endpoint's normal body with the hostile value in a number field, then in a text field."""
    if path == "check-in":
        shapes: list[dict[str, object]] = [{"uptime_s": "__HOSTILE__"}, {"agent_version": "__HOSTILE__"}]
    elif path == "register":
        shapes = [{**host_facts(machine_id="poison"), "cpu_cores": "__HOSTILE__"},
                  {**host_facts(machine_id="poison"), "hostname": "__HOSTILE__"}]
    else:
        service = {"name": "nginx", "version": "1.24.0", "status": "running", "pid": 1}
        shapes = [{"services": [{**service, "pid": "__HOSTILE__"}]},
                  {"services": [{**service, "name": "__HOSTILE__"}]}]
    return [orjson.dumps(shape) for shape in shapes]


def _refused(client: TestClient, path: str, credential: str, kind: str) -> None:
    for body in _bodies(path):
        poisoned = body.replace(MARK, HOSTILE[kind])
        response = client.post(f"/api/v1/agent/{path}", content=poisoned,
                               headers={**bearer(credential), "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (kind, poisoned[:80], response.status_code, response.text[:300])
        assert response.json()["error"]["status"] == response.status_code


@pytest.mark.parametrize("path", ["check-in", "register", "discovery"])
def test_every_hostile_value_is_refused_and_another_teams_agent_is_stored_right_after(
        client: TestClient, story: Story, path: str) -> None:
    server_a, token_a = enrol(client, story.admin_a, machine_id="victim-a", hostname="victim-a")
    _, token_b = enrol(client, story.admin_b, machine_id="attacker-b", hostname="attacker-b")
    for number, kind in enumerate(HOSTILE):
        _refused(client, path, story.admin_b if path == "register" else token_b, kind)
        version = f"2.0.{number}"
        assert client.post("/api/v1/agent/check-in", headers=bearer(token_a),
                           json={"agent_version": version, "uptime_s": number}).status_code == 200
        snapshot = {**SEED_SNAPSHOT, "services": SEED_SNAPSHOT["services"][: 1 + number % 3]}
        assert client.post("/api/v1/agent/discovery", headers=bearer(token_a), json=snapshot).status_code == 200
        flush_buffers(runtime.of(client.app))
        detail = client.get(f"/api/v1/servers/{server_a}", headers=bearer(story.admin_a)).json()
        assert (detail["agent_version"], detail["status"]) == (version, "online"), kind
        assert [s["name"] for s in detail["services"]] == [s["name"] for s in snapshot["services"]], kind
    # Nothing of the attacker's was stored: still one server in team B, none named by the poison.
    servers_b = client.get("/api/v1/servers", headers=bearer(story.admin_b)).json()
    assert [server["hostname"] for server in servers_b["data"]] == ["attacker-b"]
