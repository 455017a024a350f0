"""Bad input on every agent endpoint: a clear 4xx in the envelope, nothing stored, earlier data intact."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, MutableMapping
from typing import Any

import orjson
import pytest
import zstandard
from fastapi.testclient import TestClient

from hostatlas import tokens
from hostatlas.app import create_app
from hostatlas.db.engine import Database
from hostatlas.http import runtime
from hostatlas.servers.agent_auth import AgentAuthenticator
from hostatlas.servers.checkins import CheckinBuffer
from hostatlas.settings import Settings
from tests.support import SEED_SNAPSHOT, Story, bearer, enrol, host_facts

JSON = {"Content-Type": "application/json"}


def _state(client: TestClient, story: Story, server_id: int) -> dict[str, Any]:
    detail = client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).json()
    detail.pop("last_seen_at")
    servers = client.get("/api/v1/servers", headers=bearer(story.admin_a)).json()["meta"]["total"]
    changes = client.get(f"/api/v1/servers/{server_id}/changes", headers=bearer(story.admin_a)).json()["meta"]["total"]
    return {"detail": detail, "servers": servers, "changes": changes}


def _bomb_gzip() -> bytes:
    return gzip.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}", compresslevel=9)


def _bomb_zstd() -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(b"[" + b"0," * (32 * 1024 * 1024) + b"0]")


BAD_BODIES: list[tuple[str, dict[str, str], bytes, int]] = [
    ("malformed json", JSON, b'{"services": [', 400),
    ("wrong content type", {"Content-Type": "text/plain"}, b'{"services": []}', 415),
    ("wrong types", JSON, b'{"services": [{"name": 5, "pid": "abc", "ports": ["x"]}], "uptime_s": "long",'
                          b' "hostname": 7, "machine_id": []}', 422),
    ("top-level array", JSON, b"[1, 2, 3]", 422),
    ("truncated zstd", {**JSON, "Content-Encoding": "zstd"},
     zstandard.ZstdCompressor().compress(b'{"services": []}' * 50)[:-7], 400),
    ("truncated gzip", {**JSON, "Content-Encoding": "gzip"}, gzip.compress(b'{"services": []}')[:-6], 400),
]


@pytest.mark.parametrize("path", ["register", "check-in", "discovery"])
@pytest.mark.parametrize(("label", "headers", "body", "status"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_are_refused_and_nothing_changes(client: TestClient, story: Story, path: str, label: str,
                                                    headers: dict[str, str], body: bytes, status: int) -> None:
    server_id, token = enrol(client, story.admin_a)
    client.post("/api/v1/agent/discovery", headers=bearer(token), json=SEED_SNAPSHOT)
    before = _state(client, story, server_id)
    credential = story.admin_a if path == "register" else token
    response = client.post(f"/api/v1/agent/{path}", headers={**bearer(credential), **headers}, content=body)
    if label == "top-level array" and path == "check-in":
        status = 422
    assert response.status_code == status, response.text
    assert response.json()["error"]["status"] == status
    assert "X-Request-Id" in response.headers
    assert _state(client, story, server_id) == before


@pytest.mark.parametrize("path", ["register", "check-in", "discovery"])
@pytest.mark.parametrize(("encoding", "make"), [("gzip", _bomb_gzip), ("zstd", _bomb_zstd)])
def test_decompression_bombs_are_refused(client: TestClient, story: Story, encoding: str, make: Any,
                                         path: str) -> None:
    server_id, token = enrol(client, story.admin_a)
    before = _state(client, story, server_id)
    bomb = make()
    assert len(bomb) < 1_048_576  # small on the wire, 64 MiB inflated
    credential = story.admin_a if path == "register" else token
    headers = {**bearer(credential), **JSON, "Content-Encoding": encoding}
    response = client.post(f"/api/v1/agent/{path}", headers=headers, content=bomb)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert _state(client, story, server_id) == before


def test_compressed_bodies_are_accepted(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    raw = orjson.dumps(SEED_SNAPSHOT)
    for encoding, packed in (("gzip", gzip.compress(raw)), ("zstd", zstandard.ZstdCompressor().compress(raw))):
        response = client.post("/api/v1/agent/discovery",
                               headers={**bearer(token), **JSON, "Content-Encoding": encoding}, content=packed)
        assert response.status_code == 200, (encoding, response.text)
    assert len(client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).json()["services"]) == 3
    checkin = orjson.dumps({"uptime_s": 777, "boot_id": "gz"})
    for encoding, packed in (("gzip", gzip.compress(checkin)), ("zstd", zstandard.ZstdCompressor().compress(checkin))):
        response = client.post("/api/v1/agent/check-in",
                               headers={**bearer(token), **JSON, "Content-Encoding": encoding}, content=packed)
        assert response.status_code == 200, (encoding, response.text)
    runtime.of(client.app).part(CheckinBuffer).flush(runtime.of(client.app).db)
    assert client.get(f"/api/v1/servers/{server_id}", headers=bearer(story.admin_a)).json()["uptime_s"] == 777


def test_oversized_and_invalid_lists_are_field_errors(client: TestClient, story: Story) -> None:
    server_id, token = enrol(client, story.admin_a)
    client.post("/api/v1/agent/discovery", headers=bearer(token), json=SEED_SNAPSHOT)
    before = _state(client, story, server_id)
    too_many = {"services": [{"name": f"svc-{i}"} for i in range(2001)]}
    response = client.post("/api/v1/agent/discovery", headers=bearer(token), json=too_many)
    assert response.status_code == 422 and response.json()["error"]["fields"][0]["field"] == "services"
    duplicated = {"services": [{"name": "nginx"}, {"name": "nginx"}], "domains": [{"name": "a.example.com"}] * 2}
    response = client.post("/api/v1/agent/discovery", headers=bearer(token), json=duplicated)
    assert {f["field"] for f in response.json()["error"]["fields"]} == {"services", "domains"}
    out_of_range = {"services": [{"name": "x", "ports": [70000], "pid": -1}], "certificates": [{"path": ""}]}
    fields = {f["field"] for f in client.post("/api/v1/agent/discovery", headers=bearer(token),
                                              json=out_of_range).json()["error"]["fields"]}
    assert fields == {"services[0].ports[0]", "services[0].pid", "certificates[0].path"}
    bad_register = client.post("/api/v1/agent/register", headers=bearer(story.admin_a),
                               json=dict(host_facts(), cpu_cores=-2, machine_id=""))
    assert {f["field"] for f in bad_register.json()["error"]["fields"]} == {"cpu_cores", "machine_id"}
    assert _state(client, story, server_id) == before



def _leave_mid_body(client: TestClient, path: str, token: str, extra_headers: list[tuple[bytes, bytes]]) -> list[Any]:
    """Send half a body through the app, then the client's disconnect; the messages the app sent back."""
    sent: list[dict[str, Any]] = []
    parts: Iterator[dict[str, Any]] = iter([{"type": "http.request", "body": b'{"series": [{"na', "more_body": True},
                  {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(parts)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"content-length", b"4000"), (b"authorization", f"Bearer {token}".encode()),
                         *extra_headers]}
    async def request() -> None:
        await client.app(scope, receive, send)

    assert client.portal is not None
    client.portal.call(request)
    return sent


@pytest.mark.parametrize("kind", ["metrics", "logs", "check-in"])
@pytest.mark.parametrize("route", ["fast path", "regular route", "compressed"])
def test_a_client_leaving_mid_body_is_logged_without_a_trace(client: TestClient, story: Story, db: Database,
                                                             settings: Settings, kind: str, route: str,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    """An agent whose connection drops halfway through a request: no 500, no traceback, nothing stored.
    The fast path serves agents the node knows; one enrolled since the node started goes through the routes."""
    if route == "regular route":
        with TestClient(create_app(settings, db=db), raise_server_exceptions=False) as node:
            _server_id, token = enrol(client, story.admin_a)  # through another node: this one does not know it
            assert runtime.of(node.app).part(AgentAuthenticator).cached(tokens.hash_token(token)) is None
            capfd.readouterr()
            sent = _leave_mid_body(node, f"/api/v1/agent/{kind}", token, [])
    else:
        _server_id, token = enrol(client, story.admin_a)
        client.post("/api/v1/agent/check-in", headers=bearer(token), json={})  # the node now knows the agent
        assert runtime.of(client.app).part(AgentAuthenticator).cached(tokens.hash_token(token)) is not None
        capfd.readouterr()
        sent = _leave_mid_body(client, f"/api/v1/agent/{kind}", token,
                               [(b"content-encoding", b"gzip")] if route == "compressed" else [])
    logged = "".join(capfd.readouterr())
    assert "unhandled_error" not in logged and "Traceback" not in logged
    if route == "regular route" and kind == "check-in":
        # FastAPI reads a body model itself, and answers a body it could not read with its 400 (to nobody).
        assert [message["status"] for message in sent if message["type"] == "http.response.start"] == [400]
    else:
        assert "client_disconnected" in logged
        assert sent == []  # nobody is left to answer
    answer = client.post(f"/api/v1/agent/{kind}", headers=bearer(token),
                         json={"series": []} if kind == "metrics" else {"entries": []} if kind == "logs" else {})
    assert answer.status_code == 200, answer.text
