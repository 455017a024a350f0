"""A real webhook receiver on loopback for the tests: records every request, answers as scripted."""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    # Replies in order; when they run out, ``default`` answers. A callable decides from the request.
    replies: list[Reply] = field(default_factory=list)
    default: Reply | Callable[[Received], Reply] = field(default_factory=Reply)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"expected {count} requests, got {len(self.requests)}")


@contextmanager
def receiver(*replies: Reply, default: Reply | Callable[[Received], Reply] | None = None,
             tls_dir: Path | None = None) -> Iterator[Receiver]:
    """Serves plain HTTP, or HTTPS with a fresh self-signed certificate (no client trusts it) under tls_dir."""
    state = Receiver(url="", replies=list(replies), default=default or Reply())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = Received(self.path, {key.lower(): value for key, value in self.headers.items()}, body,
                               time.monotonic())
            with state.lock:
                state.requests.append(request)
                scripted = state.replies.pop(0) if state.replies else None
            reply = scripted or (state.default(request) if callable(state.default) else state.default)
            if reply.delay:
                time.sleep(reply.delay)
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # socketserver's 5 drops connections when several workers open them at once

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that timed out and hung up is part of the tests, not an error

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls_dir is not None:
        server.socket = _self_signed_context(tls_dir).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"{'https' if tls_dir else 'http'}://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens: every connection is refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def _self_signed_context(directory: Path) -> ssl.SSLContext:
    key, cert = directory / "receiver.key", directory / "receiver.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=receiver.test", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
