"""Services: real processes listening on 127.0.0.1, watch specs, version commands and their cache."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from hostatlas_agent.config import AgentConfig, WatchSpec
from hostatlas_agent.discovery import FoundService, take_snapshot
from hostatlas_agent.discovery.known import match_known
from hostatlas_agent.discovery.services import discover_services
from hostatlas_agent.discovery.units import UnitState, parse_cgroup, parse_list_units
from hostatlas_agent.discovery.versions import VersionProbe, parse_version

LISTEN = ("import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); "
          "print(s.getsockname()[1], flush=True); time.sleep(60)")
# A pre-fork server: the parent listens, then forks a worker that inherits the socket.
LISTEN_AND_FORK = ("import os,socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); "
                   "pid=os.fork(); print(s.getsockname()[1], pid, flush=True) if pid else None; time.sleep(60)")


def make_config(**overrides: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "nginx_configs": [], "apache_configs": [], "certificate_paths": [], "served_certificates": False,
        "docker_socket": "/nonexistent/docker.sock",
        "features": {"logs": True, "discovery": True, "containers": False, "certificates": False,
                     "crash_reports": True}}
    settings.update(overrides)
    return AgentConfig(**settings)


Starter = Callable[..., "tuple[subprocess.Popen[str], list[str]]"]


@pytest.fixture
def start() -> Iterator[Starter]:
    """Starts a Python process and reads the first line it prints; everything started is killed afterwards."""
    started: list[subprocess.Popen[str]] = []

    def run(code: str, *args: str, executable: str = sys.executable) -> tuple[subprocess.Popen[str], list[str]]:
        proc = subprocess.Popen([executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        return proc, proc.stdout.readline().split()

    yield run
    for proc in started:
        for child in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
            child.kill()
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def service_with_pid(services: list[FoundService], pid: int) -> FoundService:
    matches = [s for s in services if s.pid == pid]
    assert len(matches) == 1, [s.name for s in services]
    return matches[0]


def wait_listening(pid: int, port: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
               for c in psutil.Process(pid).net_connections()):
            return
        time.sleep(0.05)
    raise AssertionError(f"{pid} never listened on {port}")


def test_a_listening_process_is_a_service_with_its_port_and_pid(start: Starter) -> None:
    proc, (port,) = start(LISTEN)
    snapshot = take_snapshot(make_config())
    service = service_with_pid(snapshot.services, proc.pid)
    name = psutil.Process(proc.pid).name()
    assert service.name in (name, f"{name}:{port}")
    assert service.status == "running"
    assert service.ports == [int(port)]
    assert service.version is None  # nothing is ever run for an unknown process
    body = [item for item in snapshot.payload["services"] if item["pid"] == proc.pid]
    assert body == [{"name": service.name, "version": None, "status": "running", "unit": service.unit,
                     "pid": proc.pid, "ports": [int(port)], "log_paths": []}]
    names = [item["name"] for item in snapshot.payload["services"]]
    assert names == sorted(names) and len(set(names)) == len(names)


def test_two_unrelated_processes_of_one_name_are_told_apart_by_port(start: Starter) -> None:
    first, (port1,) = start(LISTEN)
    second, (port2,) = start(LISTEN)
    services = take_snapshot(make_config()).services
    name = psutil.Process(first.pid).name()
    assert service_with_pid(services, first.pid).name == f"{name}:{port1}"
    assert service_with_pid(services, second.pid).name == f"{name}:{port2}"


def test_a_forked_worker_sharing_the_socket_is_part_of_its_parents_service(start: Starter) -> None:
    parent, (port, child_pid) = start(LISTEN_AND_FORK)
    wait_listening(int(child_pid), int(port))
    services = take_snapshot(make_config()).services
    service = service_with_pid(services, parent.pid)
    assert service.ports == [int(port)]
    assert not [s for s in services if s.pid == int(child_pid)]


def test_a_watch_spec_names_the_process_it_matches(start: Starter) -> None:
    marker = f"ha-watch-{uuid.uuid4().hex}"  # other tests on this host may run the same code
    proc, (port,) = start(LISTEN, marker)
    watch = [WatchSpec(name="my-listener", process=rf"bind.* {marker}$", log_paths=["/var/log/mine.log"]),
             WatchSpec(name="ghost", process=r"^no-such-process-anywhere$"),
             WatchSpec(name="broken", process="(unclosed")]
    services = take_snapshot(make_config(watch=watch)).services
    by_name = {s.name: s for s in services}
    mine = by_name["my-listener"]
    assert (mine.pid, mine.ports, mine.status) == (proc.pid, [int(port)], "running")
    assert mine.log_paths == ["/var/log/mine.log"]
    assert mine.process_pattern == watch[0].process
    assert [s.name for s in services if s.pid == proc.pid] == ["my-listener"]  # not also reported as unknown
    assert (by_name["ghost"].status, by_name["ghost"].pid) == ("stopped", None)
    assert (by_name["broken"].status, by_name["broken"].pid) == ("stopped", None)


def test_the_agent_itself_is_never_a_service() -> None:
    with socket.socket() as own:
        own.bind(("127.0.0.1", 0))
        own.listen()
        services = take_snapshot(make_config()).services
    assert not [s for s in services if s.pid == os.getpid()]


def test_a_known_service_is_named_by_the_table_and_asked_its_version(start: Starter, tmp_path: Path) -> None:
    if any(p.info["name"] == "memcached" for p in psutil.process_iter(["name"])):
        pytest.skip("a real memcached runs here")
    # A process whose name is "memcached": Python started through a link of that name. "memcached -V" then runs
    # that same binary, which answers "Python X.Y.Z": proof the version command ran, once.
    fake = tmp_path / "memcached"
    fake.symlink_to(os.path.realpath(sys.executable))
    proc, (port,) = start(LISTEN, executable=str(fake))
    assert psutil.Process(proc.pid).name() == "memcached"
    services = take_snapshot(make_config()).services
    memcached = service_with_pid(services, proc.pid)
    assert memcached.name == "memcached"
    assert memcached.ports == [int(port)]
    assert memcached.version == "{}.{}.{}".format(*sys.version_info[:3])
    assert memcached.process_pattern == "^(?:memcached)$"


def test_version_commands_run_once_per_binary_and_again_after_an_upgrade(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    binary = tmp_path / "fakeserver"
    binary.write_text(f"#!/bin/sh\necho run >> {counter}\necho 'Server version: Apache/2.4.58 (Ubuntu)' >&2\n")
    binary.chmod(0o755)
    probe = VersionProbe()
    assert probe.version(str(binary), ["-v"]) == "2.4.58"
    assert probe.version(str(binary), ["-v"]) == "2.4.58"
    assert counter.read_text().splitlines() == ["run"]
    stat = binary.stat()
    os.utime(binary, (stat.st_atime, stat.st_mtime + 10))
    assert probe.version(str(binary), ["-v"]) == "2.4.58"
    assert counter.read_text().splitlines() == ["run", "run"]
    assert probe.version(str(tmp_path / "missing"), ["-v"]) is None


def test_a_hanging_version_command_is_cut_short(tmp_path: Path) -> None:
    binary = tmp_path / "sleeper"
    binary.write_text("#!/bin/sh\nexec sleep 30\n")
    binary.chmod(0o755)
    began = time.monotonic()
    assert VersionProbe(timeout=0.5).version(str(binary), ["--version"]) is None
    assert time.monotonic() - began < 5


@pytest.mark.parametrize(("output", "version"), [
    ("nginx version: nginx/1.24.0 (Ubuntu)", "1.24.0"),
    ("postgres (PostgreSQL) 15.4 (Debian 15.4-1.pgdg120+1)", "15.4"),
    ("Redis server v=7.2.3 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1", "7.2.3"),
    ("/usr/sbin/mysqld  Ver 8.0.35-0ubuntu0.22.04.1 for Linux on x86_64 ((Ubuntu))", "8.0.35"),
    ("db version v7.0.2\nBuild Info: {}", "7.0.2"),
    ("OpenSSH_9.6p1 Ubuntu-3ubuntu13, OpenSSL 3.0.13 30 Jan 2024", "9.6p1"),
    ("HAProxy version 2.8.3-1ubuntu1 2023/09/07 - https://haproxy.org/", "2.8.3"),
    ("v2.7.6 h1:w0NymbG2m9PcvKWsrXO6EEkY9Ru4FJK8uQbYcev1p3A=", "2.7.6"),
    ("Docker version 24.0.7, build afdd53b", "24.0.7"),
    ("no digits here", None),
])
def test_versions_are_read_from_the_usual_outputs(output: str, version: str | None) -> None:
    assert parse_version(output) == version


def test_the_table_recognises_services_by_name_and_command_line() -> None:
    def known(name: str, cmdline: str) -> str | None:
        found = match_known(name, cmdline)
        return found.name if found else None

    assert known("nginx", "nginx: master process /usr/sbin/nginx -g daemon on;") == "nginx"
    assert known("php-fpm8.2", "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)") == "php-fpm"
    assert known("beam.smp", "/usr/lib/erlang/erts/bin/beam.smp -- -root /usr/lib/erlang -s rabbit boot") \
        == "rabbitmq"
    assert known("beam.smp", "/usr/lib/erlang/erts/bin/beam.smp -- -s elixir") is None
    assert known("master", "/usr/lib/postfix/sbin/master -w") == "postfix"
    assert known("master", "./master --serve") is None
    assert known("python3", "/usr/bin/python3 -m hostatlas serve --port 8000") == "hostatlas"
    assert known("python3", "/usr/bin/python3 -m hostatlas_agent run") is None
    assert known("java", "java -Xms1g org.elasticsearch.bootstrap.Elasticsearch") == "elasticsearch"
    assert known("nginx-proxy", "nginx-proxy") is None


def test_systemctl_output_and_cgroups_are_understood() -> None:
    units = parse_list_units(
        "nginx.service loaded active running A high performance web server\n"
        "● redis-server.service loaded failed failed Advanced key-value store\n"
        "postgresql.service loaded active exited PostgreSQL RDBMS\n"
        "apache2.service loaded inactive dead The Apache HTTP Server\n"
        "ghost.service not-found inactive dead ghost.service\n"
        "dev-sda.device loaded active plugged disk\n")
    assert sorted(units) == ["apache2.service", "ghost.service", "nginx.service", "postgresql.service",
                             "redis-server.service"]
    assert units["nginx.service"].status == "running"
    assert units["redis-server.service"].status == "failed"
    assert units["postgresql.service"].status == "stopped"  # a oneshot wrapper: its clusters have own units
    assert units["apache2.service"] == UnitState("apache2.service", "loaded", "inactive", "dead")
    assert parse_cgroup("0::/system.slice/nginx.service\n") == "nginx.service"
    assert parse_cgroup("12:pids:/system.slice/postgresql@15-main.service\n0::/system.slice/"
                        "postgresql@15-main.service\n") == "postgresql@15-main.service"
    assert parse_cgroup("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app.service") \
        == "app.service"
    assert parse_cgroup("0::/user.slice/user-1000.slice/user@1000.service/init.scope") is None
    assert parse_cgroup("0::/\n") is None


def test_stopped_and_failed_units_are_reported_by_their_state() -> None:
    if any(p.info["name"] in ("caddy", "traefik") for p in psutil.process_iter(["name"])):
        pytest.skip("a real caddy or traefik runs here")
    units = parse_list_units(
        "caddy.service loaded failed failed Caddy\n"
        "traefik.service loaded inactive dead Traefik\n"
        "billing.service loaded active running Billing worker\n")
    watch = [WatchSpec(name="billing", unit="billing"), WatchSpec(name="reports", unit="reports.service")]
    services = {s.name: s for s in discover_services(watch, VersionProbe(), units=units)}
    assert (services["caddy"].status, services["caddy"].unit, services["caddy"].pid) == ("failed", "caddy.service",
                                                                                       None)
    assert (services["traefik"].status, services["traefik"].unit) == ("stopped", "traefik.service")
    # No process of this host runs in billing.service, so its unit's word is all there is.
    assert (services["billing"].status, services["billing"].unit, services["billing"].pid) == (
        "running", "billing.service", None)
    assert (services["reports"].status, services["reports"].unit) == ("stopped", "reports.service")


def test_the_platforms_own_output_is_not_tailed(tmp_path: Path) -> None:
    """`hostatlas serve > serve.log` logs a line per agent request: tailing it would echo every batch forever."""
    log = tmp_path / "serve.log"
    code = f"import time; f = open({str(log)!r}, 'a'); print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, "hostatlas", "serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        services = take_snapshot(make_config()).services
        # Another `hostatlas serve` (a parallel test's) may be the one reported as the platform: then this
        # one is claimed by it. Either way no service may carry this process's open log file.
        assert any(s.name == "hostatlas" for s in services)
        assert not [s.name for s in services if str(log) in s.log_paths]
    finally:
        proc.kill()
        proc.wait()
