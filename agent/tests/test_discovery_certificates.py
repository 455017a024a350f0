"""Certificates on disk, and the one a real local TLS server serves: both reported, so a renewal that was never
reloaded shows."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hostatlas_agent.config import AgentConfig
from hostatlas_agent.discovery import take_snapshot
from hostatlas_agent.discovery.certificates import CertificateFacts, CertificateParser
from hostatlas_agent.discovery.served import ServedCertificateProbe

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def read_certificate(path: str) -> CertificateFacts | None:
    """One file through the parser the agent uses (a child process does the parsing)."""
    return CertificateParser().files([path]).get(path)


def make_certificate(directory: Path, stem: str, names: list[str], not_after: datetime,
                     issuer_cn: str = "HostAtlas Test CA") -> tuple[Path, Path, x509.Certificate]:
    """A certificate for ``names`` (SANs; CN the first), signed by a throwaway CA, written as a chain file
    (leaf first, then the CA) next to its key."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=30))
          .not_valid_after(NOW + timedelta(days=3650)).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
               .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=1)).not_valid_after(not_after))
    if len(names) > 1:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    leaf = builder.sign(ca_key, hashes.SHA256())
    chain = directory / f"{stem}.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    key_path = directory / f"{stem}.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain, key_path, leaf


def fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_config(**overrides: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "nginx_configs": [], "apache_configs": [], "certificate_paths": [], "served_certificates": True,
        "docker_socket": "/nonexistent/docker.sock",
        "features": {"logs": True, "discovery": True, "containers": False, "certificates": True,
                     "crash_reports": True}}
    settings.update(overrides)
    return AgentConfig(**settings)


class TLSServer:
    """A real TLS server on 127.0.0.1 serving one certificate; remembers the SNI names it was asked for."""

    def __init__(self, chain: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(chain), str(key))
        self.server_names: list[str | None] = []
        self.context.sni_callback = self._remember_name
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _remember_name(self, _sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not on Linux
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[TLSServer, x509.Certificate]]:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    chain, key, leaf = make_certificate(served_dir, "old", ["app.example.test", "www.example.test"],
                                        NOW + timedelta(days=5), issuer_cn="Old CA")
    server = TLSServer(chain, key)
    yield server, leaf
    server.close()


def test_a_chain_file_is_read_as_its_leaf(tmp_path: Path) -> None:
    not_after = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    chain, key, leaf = make_certificate(tmp_path, "site", ["site.example.test", "api.example.test"], not_after)
    facts = read_certificate(str(chain))
    assert facts is not None
    assert facts.subject == "CN=site.example.test"
    assert facts.issuer == "CN=HostAtlas Test CA"
    assert facts.domains == ["api.example.test", "site.example.test"]
    assert facts.not_after == "2031-05-06T07:08:09Z"
    assert facts.fingerprint_sha256 == fingerprint(leaf)
    assert read_certificate(str(key)) is None  # a private key is no certificate
    der = tmp_path / "site.der"
    der.write_bytes(leaf.public_bytes(serialization.Encoding.DER))
    assert read_certificate(str(der)) == facts


def test_a_certificate_without_sans_names_its_common_name(tmp_path: Path) -> None:
    chain, _, _ = make_certificate(tmp_path, "cn", ["only.example.test"], NOW + timedelta(days=9))
    facts = read_certificate(str(chain))
    assert facts is not None and facts.domains == ["only.example.test"]


def test_certificate_globs_are_reported_and_junk_is_skipped(tmp_path: Path) -> None:
    live = tmp_path / "live"
    (live / "a").mkdir(parents=True)
    (live / "b").mkdir()
    not_after = NOW + timedelta(days=60)
    _, _, leaf_a = make_certificate(live / "a", "fullchain", ["a.example.test", "www.a.example.test"], not_after)
    make_certificate(live / "b", "fullchain", ["b.example.test"], not_after)
    (live / "c").mkdir()
    (live / "c" / "fullchain.pem").write_text("not a certificate\n")
    (live / "d").mkdir()
    (live / "d" / "fullchain.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n" + b"A" * (1024 * 1024 + 10))
    payload = take_snapshot(make_config(certificate_paths=[f"{live}/*/fullchain.pem", "/nonexistent/*.pem"],
                                        features={"discovery": False, "containers": False})).payload
    assert sorted(payload) == ["certificates"]
    assert [c["path"] for c in payload["certificates"]] == [f"{live}/a/fullchain.pem", f"{live}/b/fullchain.pem"]
    assert payload["certificates"][0] == {
        "path": f"{live}/a/fullchain.pem", "subject": "CN=a.example.test", "issuer": "CN=HostAtlas Test CA",
        "domains": ["a.example.test", "www.a.example.test"], "not_after": iso(not_after),
        "fingerprint_sha256": fingerprint(leaf_a)}


def nginx_config(tmp_path: Path, port: int, certificate: Path) -> Path:
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""http {{
    server {{
        listen {port} ssl;
        server_name app.example.test *.example.test;
        ssl_certificate {certificate};
    }}
}}
""")
    return conf


def test_the_served_certificate_is_reported_beside_the_one_on_disk(
        tmp_path: Path, tls_server: tuple[TLSServer, x509.Certificate]) -> None:
    server, served_leaf = tls_server
    disk_not_after = NOW + timedelta(days=89)
    chain, _, disk_leaf = make_certificate(tmp_path, "renewed", ["app.example.test", "www.example.test"],
                                           disk_not_after, issuer_cn="New CA")
    config = make_config(nginx_configs=[str(nginx_config(tmp_path, server.port, chain))])
    payload = take_snapshot(config, served=ServedCertificateProbe()).payload
    domains = {d["name"]: d for d in payload["domains"]}
    app = domains["app.example.test"]
    assert app["certificate"] == {"path": str(chain), "not_after": iso(disk_not_after),
                                  "fingerprint_sha256": fingerprint(disk_leaf)}
    assert app["served_certificate"] == {
        "not_after": iso(served_leaf.not_valid_after_utc), "fingerprint_sha256": fingerprint(served_leaf),
        "issuer": "CN=Old CA", "subject": "CN=app.example.test"}
    assert app["certificate"]["fingerprint_sha256"] != app["served_certificate"]["fingerprint_sha256"]
    assert app["ssl_expiry"] == served_leaf.not_valid_after_utc.date().isoformat()  # what clients get
    assert server.server_names == ["app.example.test"]  # SNI sent; the wildcard name is never dialled
    assert domains["*.example.test"]["served_certificate"] is None
    assert domains["*.example.test"]["ssl_expiry"] == disk_not_after.date().isoformat()
    assert [c["path"] for c in payload["certificates"]] == [str(chain)]  # named by the vhost


def test_handshakes_are_cached_for_ten_minutes(tmp_path: Path,
                                               tls_server: tuple[TLSServer, x509.Certificate]) -> None:
    server, _ = tls_server
    chain, _, _ = make_certificate(tmp_path, "disk", ["app.example.test"], NOW + timedelta(days=80))
    config = make_config(nginx_configs=[str(nginx_config(tmp_path, server.port, chain))])
    now = [1000.0]
    probe = ServedCertificateProbe(clock=lambda: now[0])
    first = take_snapshot(config, served=probe)
    now[0] += 599
    second = take_snapshot(config, served=probe)
    assert probe.handshakes == 1 and len(server.server_names) == 1
    assert first.payload["domains"] == second.payload["domains"]
    now[0] += 2
    take_snapshot(config, served=probe)
    assert probe.handshakes == 2 and len(server.server_names) == 2


def test_without_a_server_or_without_probing_the_disk_certificate_gives_the_expiry(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    not_after = NOW + timedelta(days=40)
    chain, _, _ = make_certificate(tmp_path, "disk", ["app.example.test"], not_after)
    conf = str(nginx_config(tmp_path, port, chain))
    for served_certificates in (True, False):
        config = make_config(nginx_configs=[conf], served_certificates=served_certificates)
        probe = ServedCertificateProbe()
        app = {d["name"]: d for d in take_snapshot(config, served=probe).payload["domains"]}["app.example.test"]
        assert app["served_certificate"] is None
        assert app["ssl_expiry"] == not_after.date().isoformat()
        assert app["certificate"] is not None
        assert probe.handshakes == (1 if served_certificates else 0)


def test_the_parser_reads_a_file_once_until_it_changes(tmp_path: Path) -> None:
    chain, key, _ = make_certificate(tmp_path, "site", ["site.example.test"], NOW + timedelta(days=30))
    parser = CertificateParser()
    first = parser.files([str(chain), str(key)])
    assert list(first) == [str(chain)] and parser.runs == 1  # the key never reaches the child
    assert parser.files([str(chain), str(key)]) == first and parser.runs == 1  # unchanged: not parsed again
    make_certificate(tmp_path, "site", ["site.example.test", "new.example.test"], NOW + timedelta(days=90))
    renewed = parser.files([str(chain)])
    assert parser.runs == 2 and renewed[str(chain)].domains == ["new.example.test", "site.example.test"]


def test_the_agent_process_never_loads_cryptography(tmp_path: Path) -> None:
    """cryptography is a third of the agent's memory budget: only the short-lived parser child imports it."""
    chain, _, _ = make_certificate(tmp_path, "site", ["site.example.test"], NOW + timedelta(days=30))
    probe = ("import sys; from hostatlas_agent.discovery.certificates import CertificateParser; "
             f"found = CertificateParser().files([{str(chain)!r}]); assert found, found; "
             "print(sorted(m for m in sys.modules if m.startswith('cryptography')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_parser_that_cannot_run_leaves_certificates_out(tmp_path: Path) -> None:
    chain, _, _ = make_certificate(tmp_path, "site", ["site.example.test"], NOW + timedelta(days=30))
    broken = CertificateParser(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    assert broken.files([str(chain)]) == {}
