"""The ping URLs in the OpenAPI document: answered by ``ping_routes.PingEndpoints`` (pure ASGI, outside FastAPI's
routing), described here so that the API explorer shows them and the schemathesis run fuzzes them."""

from __future__ import annotations

from typing import Any

from hostatlas.heartbeats.ping_routes import MAX_RID

TAG = "Heartbeat pings"
SUFFIX_PATTERN = "^(start|fail|log|[0-9]{1,3})$"
PLAIN = {"text/plain": {"schema": {"type": "string"}}}

_RESPONSES: dict[str, Any] = {
    "200": {"description": "`OK`: the ping is stored (committed before this answer)", "content": PLAIN},
    "400": {"description": "A bad `rid`", "content": PLAIN},
    "403": {"description": "`?create=1` beyond the plan's heartbeat limit", "content": PLAIN},
    "404": {"description": "No such heartbeat (unknown or malformed token, unknown slug, exit status "
                           "outside 0-255)", "content": PLAIN},
    "429": {"description": "More than HOSTATLAS_PING_RATE_LIMIT pings for this heartbeat; see Retry-After",
            "content": PLAIN},
    "503": {"description": "The database is down: nothing was stored; retry", "content": PLAIN},
}
_RID = {"name": "rid", "in": "query", "required": False, "description": "Pairs a /start with the ping that ends "
        "the run, so overlapping runs are timed correctly", "schema": {"type": "string", "maxLength": MAX_RID}}
_CREATE = {"name": "create", "in": "query", "required": False, "description": "`1`: create the heartbeat on its "
           "first ping (slug URLs, when the team's ping settings allow it)", "schema": {"type": "string",
                                                                                          "enum": ["0", "1"]}}
_BODY = {"required": False, "description": "Anything, e.g. the job's output; the first HOSTATLAS_PING_BODY_BYTES "
         "are kept with the ping", "content": {"text/plain": {"schema": {"type": "string"}},
                                                "application/octet-stream": {"schema": {"type": "string",
                                                                                        "format": "binary"}}}}


def _segment(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 200}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _operations(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for method in ("get", "post", "head"):
        operation: dict[str, Any] = {
            "tags": [TAG], "summary": f"{summary} ({method.upper()})", "security": [],
            "operationId": f"ping_{method}_{len(parameters)}", "parameters": parameters, "responses": _RESPONSES}
        if method == "post":
            operation["requestBody"] = _BODY
        operations[method] = operation
    return operations


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the ping URLs to ``openapi`` (paths and a tag); returns it."""
    token = _segment("token", "The heartbeat's ping token, or the team's ping key when a slug follows")
    second = _segment("suffix", "`start`, `fail`, `log`, an exit status 0-255 (0 is success), or a slug after the "
                                "team's ping key")
    suffix = _segment("action", "`start`, `fail`, `log` or an exit status 0-255", SUFFIX_PATTERN)
    paths = openapi.setdefault("paths", {})
    paths["/heartbeat/{token}"] = _operations("Ping: success", [token, _RID])
    paths["/heartbeat/{token}/{suffix}"] = _operations("Ping: start, fail, log, exit status, or a slug's success",
                                                       [token, second, _RID, _CREATE])
    paths["/heartbeat/{token}/{suffix}/{action}"] = _operations("Ping by slug: start, fail, log or exit status",
                                                                [token, second, suffix, _RID, _CREATE])
    openapi.setdefault("tags", []).append({"name": TAG, "description": "No API key: the token in the URL is the "
                                           "secret. Answers are plain text. See docs/heartbeats.md."})
    return openapi
