"""The envelope, request ids and body guards, on every kind of failure: never FastAPI's default shape."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient

from hostatlas.app import create_app
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from tests.support import Story, assert_envelope, bearer


def test_validation_errors_list_every_invalid_field(client: TestClient, story: Story) -> None:
    response = client.post("/api/v1/api-keys", headers=bearer(story.admin_a),
                           json={"name": "", "scopes": ["servers:read", "servers:admin"],
                                 "expires_at": "2001-01-01T00:00:00Z", "colour": "red"})
    error = assert_envelope(response, 422, "validation_failed")
    fields = {entry["field"]: entry["code"] for entry in error["fields"]}  # type: ignore[union-attr]
    assert fields == {"name": "string_too_short", "scopes": "unknown_scope", "expires_at": "in_the_past",
                      "colour": "extra_forbidden"}


def test_missing_fields_are_named(client: TestClient, story: Story) -> None:
    response = client.post("/api/v1/api-keys", headers=bearer(story.admin_a), json={})
    error = assert_envelope(response, 422, "validation_failed")
    assert {entry["field"] for entry in error["fields"]} == {"name", "scopes"}  # type: ignore[union-attr]


def test_malformed_json_is_400(client: TestClient, story: Story) -> None:
    response = client.post("/api/v1/api-keys", headers={**bearer(story.admin_a), "Content-Type": "application/json"},
                           content=b'{"name": "x", "scopes": [')
    assert_envelope(response, 400, "malformed_json")


def test_wrong_content_type_is_415(client: TestClient, story: Story) -> None:
    response = client.post("/api/v1/api-keys", headers={**bearer(story.admin_a), "Content-Type": "text/plain"},
                           content=b'{"name": "x", "scopes": ["*"]}')
    assert_envelope(response, 415, "unsupported_media_type")


def test_oversized_body_is_413(client: TestClient, story: Story) -> None:
    huge = b'{"name": "' + b"x" * 2_000_000 + b'", "scopes": ["*"]}'
    response = client.post("/api/v1/api-keys", headers={**bearer(story.admin_a), "Content-Type": "application/json"},
                           content=huge)
    assert_envelope(response, 413, "payload_too_large")


def test_oversized_streamed_body_is_413(client: TestClient, story: Story) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'", "scopes": ["*"]}'

    # No Content-Length: the cap applies to the bytes actually received.
    response = client.post("/api/v1/api-keys", headers={**bearer(story.admin_a), "Content-Type": "application/json"},
                           content=chunks())
    assert_envelope(response, 413, "payload_too_large")
    # Nothing was stored from the refused request: team A still has its two keys.
    assert client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).json()["meta"]["total"] == 2


def test_unknown_route_is_404(client: TestClient) -> None:
    assert_envelope(client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_envelope(client.get("/api/v2/servers"), 404, "not_found")


def test_wrong_method_is_405(client: TestClient, story: Story) -> None:
    assert_envelope(client.put("/api/v1/api-keys", headers=bearer(story.admin_a), json={}), 405,
                     "method_not_allowed")


def test_wrong_path_parameter_type_is_a_field_error(client: TestClient, story: Story) -> None:
    error = assert_envelope(client.get("/api/v1/api-keys/abc", headers=bearer(story.admin_a)), 422,
                             "validation_failed")
    assert error["fields"][0]["field"] == "key_id"  # type: ignore[index]


def test_unexpected_failure_is_an_opaque_500(db: Database, settings: Settings) -> None:
    app = create_app(settings, db=db)

    @app.get("/api/v1/explode")
    def explode() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/explode")
    error = assert_envelope(response, 500, "internal_error")
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert error["message"]


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    echoed = client.get("/api/v1/api-keys", headers={"X-Request-Id": "trace-42"})
    assert echoed.headers["X-Request-Id"] == "trace-42"
    assert echoed.json()["error"]["request_id"] == "trace-42"
    made = client.get("/api/v1/api-keys", headers={"X-Request-Id": "bad id with spaces"})
    assert made.headers["X-Request-Id"].startswith("req_")


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"


def test_readiness_fails_when_the_database_is_gone(settings: Settings) -> None:
    broken = settings.model_copy(update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
