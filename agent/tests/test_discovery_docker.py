"""Docker: a real HTTP server on a unix socket answering as the Docker daemon does."""

from __future__ import annotations

import json
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from hostatlas_agent.config import AgentConfig
from hostatlas_agent.discovery import take_snapshot
from hostatlas_agent.discovery.docker import list_containers

CONTAINERS = [
    {"Id": "3f2a9c1b7d4e" + "0" * 52, "Names": ["/worker"], "Image": "acme/worker:2.1", "ImageID": "sha256:1",
     "Command": "run", "Created": 1700000000, "State": "running", "Status": "Up 2 hours", "Ports": [],
     "Labels": {}},
    {"Id": "0a1b2c3d4e5f" + "1" * 52, "Names": ["/db", "/worker/db"], "Image": "postgres:16", "State": "exited",
     "Status": "Exited (0) 3 days ago"},
    {"Id": "99aa88bb77cc" + "2" * 52, "Names": ["/legacy"], "Image": "old:1", "Status": "Up 5 minutes"},
    "junk",
]


class DockerDaemon:
    """Answers ``GET <versioned or not>/containers/json`` on a unix socket; ``versioned=False`` plays a daemon
    that refuses the pinned API version (404), ``status`` an error."""

    def __init__(self, path: str, containers: list[Any], versioned: bool = True, status: int = 200) -> None:
        self.requests: list[str] = []
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
                daemon.requests.append(self.path)
                if status != 200:
                    self._answer(status, {"message": "boom"})
                elif self.path == ("/v1.41/containers/json?all=1" if versioned else "/containers/json?all=1"):
                    self._answer(200, containers)
                else:
                    self._answer(404, {"message": "page not found"})

            def _answer(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - unix peers have no address
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    directory = tempfile.mkdtemp(prefix="ha-d-", dir="/tmp")  # unix socket paths must stay short
    yield Path(directory)
    shutil.rmtree(directory)


def make_config(docker_socket: str) -> AgentConfig:
    return AgentConfig(nginx_configs=[], apache_configs=[], certificate_paths=[], docker_socket=docker_socket,
                       features={"discovery": False, "certificates": False, "containers": True})


def test_containers_come_from_the_daemon(socket_dir: Path) -> None:
    path = str(socket_dir / "docker.sock")
    daemon = DockerDaemon(path, CONTAINERS)
    try:
        payload = take_snapshot(make_config(path)).payload
    finally:
        daemon.close()
    assert payload == {"containers": [
        {"id": "0a1b2c3d4e5f", "name": "db", "image": "postgres:16", "status": "exited"},
        {"id": "99aa88bb77cc", "name": "legacy", "image": "old:1", "status": "running"},
        {"id": "3f2a9c1b7d4e", "name": "worker", "image": "acme/worker:2.1", "status": "running"}]}
    assert daemon.requests == ["/v1.41/containers/json?all=1"]


def test_a_daemon_refusing_the_api_version_is_asked_without_it(socket_dir: Path) -> None:
    path = str(socket_dir / "docker.sock")
    daemon = DockerDaemon(path, CONTAINERS[:1], versioned=False)
    try:
        containers = list_containers(path)
    finally:
        daemon.close()
    assert containers == [{"id": "3f2a9c1b7d4e", "name": "worker", "image": "acme/worker:2.1", "status": "running"}]
    assert daemon.requests == ["/v1.41/containers/json?all=1", "/containers/json?all=1"]


def test_a_daemon_with_no_containers_empties_the_list(socket_dir: Path) -> None:
    path = str(socket_dir / "docker.sock")
    daemon = DockerDaemon(path, [])
    try:
        assert take_snapshot(make_config(path)).payload == {"containers": []}
    finally:
        daemon.close()


def test_no_daemon_leaves_containers_out(socket_dir: Path) -> None:
    assert "containers" not in take_snapshot(make_config(str(socket_dir / "absent.sock"))).payload
    regular = socket_dir / "file.sock"
    regular.write_text("not a socket")
    assert list_containers(str(regular)) is None
    path = str(socket_dir / "docker.sock")
    daemon = DockerDaemon(path, CONTAINERS, status=500)
    try:
        assert "containers" not in take_snapshot(make_config(path)).payload
    finally:
        daemon.close()
    # The socket file is left behind by a stopped daemon: nobody answers.
    assert list_containers(path) is None


def test_containers_off_asks_no_daemon(socket_dir: Path) -> None:
    path = str(socket_dir / "docker.sock")
    daemon = DockerDaemon(path, CONTAINERS)
    try:
        config = make_config(path)
        config.features["containers"] = False
        assert take_snapshot(config).payload == {}
    finally:
        daemon.close()
    assert daemon.requests == []
