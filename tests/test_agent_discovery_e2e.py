"""What the agent discovers and watches, end to end against a real ``hostatlas serve``: a process the test
starts listening on a port, nginx vhosts and PEM files from fixtures, Docker through a unix-socket server
that answers as the daemon does, the certificate a vhost actually serves, and a crash report that opens when
a watched process is killed and resolves when it is back."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from socketserver import ThreadingMixIn, UnixStreamServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.agent_harness import create_key, running_agent
from tests.support import running_server

SERVE_ENV = {"HOSTATLAS_DATABASE_URL": "", "HOSTATLAS_FLUSH_INTERVAL": "0.2", "HOSTATLAS_WORKER_TICK": "0.5",
             "HOSTATLAS_LOCAL_AGENT": "false"}
CONTAINERS = [
    {"Id": "3f2a9c1b7d4e" + "0" * 52, "Names": ["/worker"], "Image": "acme/worker:2.1", "ImageID": "sha256:ab",
     "Command": "run", "Created": 1774100000, "State": "running", "Status": "Up 2 hours", "Ports": [],
     "Labels": {}, "HostConfig": {"NetworkMode": "default"}, "Mounts": []},
    {"Id": "9e8d7c6b5a49" + "1" * 52, "Names": ["/migrate"], "Image": "acme/app:5", "ImageID": "sha256:cd",
     "Command": "migrate", "Created": 1774000000, "State": "exited", "Status": "Exited (0) 3 days ago",
     "Ports": [], "Labels": {}, "HostConfig": {"NetworkMode": "default"}, "Mounts": []},
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("platform")
    key = create_key(root)
    with running_server(root, SERVE_ENV) as base:
        yield base, key


def make_certificate(directory: Path, name: str, names: list[str], days: int) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _DockerHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?")[0].endswith("/containers/json"):
            body, status = json.dumps(CONTAINERS).encode(), 200
        else:
            body, status = b'{"message":"page not found"}', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Api-Version", "1.41")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:  # a unix socket has no client address
        return "docker-client"


class _UnixHTTPServer(ThreadingMixIn, UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def docker_socket() -> Iterator[Path]:
    path = Path(f"/tmp/hostatlas-docker-{uuid.uuid4().hex[:8]}.sock")  # AF_UNIX paths are short
    server = _UnixHTTPServer(str(path), _DockerHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path
    server.shutdown()
    server.server_close()
    path.unlink(missing_ok=True)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real TLS server on loopback serving an OLD certificate for shop.test.example (a renewal not reloaded)."""
    served_cert, served_key = make_certificate(tmp_path, "served", ["shop.test.example"], days=5)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(served_cert, served_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, served_cert
    stop.set()
    thread.join(timeout=2)
    listener.close()


def start_listener(marker: str) -> tuple[subprocess.Popen[str], int]:
    code = ("import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); time.sleep(600)")
    process = subprocess.Popen([sys.executable, "-c", code, marker], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def test_discovery_end_to_end(platform: tuple[str, str], tmp_path: Path, docker_socket: Path,
                              tls_server: tuple[int, Path]) -> None:
    base, key = platform
    tls_port, _ = tls_server
    marker = f"discoverme-{uuid.uuid4().hex[:8]}"
    listener, port = start_listener(marker)
    nginx = tmp_path / "nginx"
    (nginx / "conf.d").mkdir(parents=True)
    disk_cert, _ = make_certificate(tmp_path, "renewed", ["shop.test.example", "www.shop.test.example"], days=80)
    (nginx / "nginx.conf").write_text("user www-data;\nevents { worker_connections 64; }\n"
                                      "http {\n  include conf.d/*.conf;\n}\n")
    (nginx / "conf.d" / "shop.conf").write_text(
        "server {\n"
        f"  listen {tls_port} ssl;\n"
        "  server_name shop.test.example www.shop.test.example;  # the shop\n"
        f"  ssl_certificate {disk_cert};\n"
        f"  error_log {tmp_path / 'shop-error.log'};\n"
        "}\n"
        "server { listen 80; server_name blog.test.example; }\n")
    try:
        with running_agent(tmp_path / "agent", base, key, nginx_configs=[str(nginx / "nginx.conf")],
                           docker_socket=str(docker_socket), served_certificates=True,
                           watch=[{"name": "marker-svc", "process": marker}]) as agent:
            sid = agent.server_id
            services = agent.eventually(
                lambda: {s["name"]: s for s in agent.api("/api/v1/services", server_id=sid)["data"]}
                if any(s["name"] == "marker-svc" for s in agent.api("/api/v1/services", server_id=sid)["data"])
                else None, "the watched listening process as a service")
            assert services["marker-svc"]["pid"] == listener.pid
            assert port in services["marker-svc"]["ports"]
            domains = agent.eventually(
                lambda: {d["name"]: d for d in agent.api("/api/v1/domains", server_id=sid)["data"]}
                if len(agent.api("/api/v1/domains", server_id=sid)["data"]) >= 3 else None, "the nginx vhosts")
            assert {"shop.test.example", "www.shop.test.example", "blog.test.example"} <= set(domains)
            shop = domains["shop.test.example"]
            assert shop["source"] == "nginx" and shop["days_until_expiry"] in (4, 5)  # what is SERVED expires
            assert shop["reload_needed"] is True
            assert shop["served_certificate"]["fingerprint_sha256"] != shop["certificate"]["fingerprint_sha256"]
            assert domains["blog.test.example"]["ssl_expiry"] is None
            detail = {d["name"]: d for d in agent.api(f"/api/v1/servers/{sid}")["domains"]}
            assert detail["shop.test.example"]["reload_needed"] is True  # the server's detail flags it too
            assert detail["blog.test.example"]["reload_needed"] is False
            certificates = agent.eventually(
                lambda: agent.api("/api/v1/certificates", server_id=sid)["data"], "the certificate on disk")
            [renewed] = [c for c in certificates if c["path"] == str(disk_cert)]
            assert set(renewed["domains"]) == {"shop.test.example", "www.shop.test.example"}
            assert renewed["days_until_expiry"] in (79, 80)
            containers = agent.eventually(
                lambda: agent.api("/api/v1/containers", server_id=sid)["data"], "the Docker containers")
            assert {(c["container_id"], c["name"], c["image"], c["status"]) for c in containers} == {
                ("3f2a9c1b7d4e", "worker", "acme/worker:2.1", "running"),
                ("9e8d7c6b5a49", "migrate", "acme/app:5", "exited")}

            # The crash watch: kill the watched process, then start it again.
            with open(tmp_path / "shop-error.log", "a") as handle:
                handle.write("2026/11/27 01:00:00 [emerg] something bad before the crash\n")
            listener.kill()
            listener.wait()
            incident = agent.eventually(
                lambda: next((i for i in agent.api("/api/v1/incidents", server_id=sid, source="crash")["data"]
                              if i["service"] == "marker-svc" and i["status"] != "resolved"), None),
                "a crash incident for the killed process")
            assert incident["severity"] == "critical"
            detail = agent.api(f"/api/v1/incidents/{incident['id']}")
            opened = detail["timeline"][0]
            assert opened["data"]["state"] and opened["data"]["metrics"]
            listener, port = start_listener(marker)
            agent.eventually(lambda: agent.api(f"/api/v1/incidents/{incident['id']}")["status"] == "resolved",
                             "the incident resolved once the process is back")
    finally:
        listener.kill()
        listener.wait()
