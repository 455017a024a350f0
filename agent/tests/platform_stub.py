"""A real HTTP server on loopback standing in for the platform's agent endpoints in the agent's own tests
(the platform's suite runs the agent against a real ``hostatlas serve``). Each answer is scripted per request."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import zstandard

Reply = tuple[int, dict[str, str], Any]


class PlatformStub:
    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        self.script: Callable[[str, Any], Reply] | None = None
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    if self.headers.get("Content-Encoding") == "zstd":
                        raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=64 << 20)
                    body = json.loads(raw) if raw else None
                except (zstandard.ZstdError, ValueError):  # as the platform does: 400, refused for good
                    self._reply(400, {}, {"error": {"code": "malformed_body", "message": "not zstd JSON"}})
                    return
                path = self.path
                status, headers, reply = (stub.script or (lambda p, b: (200, {}, {"ok": True})))(path, body)
                if 200 <= status < 300:
                    with stub.lock:
                        stub.received.append((path, body))
                self._reply(status, headers, reply)

            def _reply(self, status: int, headers: dict[str, str], reply: Any) -> None:
                data = json.dumps(reply).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self._answer("POST")

            def do_GET(self) -> None:  # noqa: N802
                self._answer("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, endpoint: str) -> list[Any]:
        with self.lock:
            return [body for path, body in self.received if path.endswith("/" + endpoint)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
