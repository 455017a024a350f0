"""deploy/ is what docs/deploy.md describes, and each file is one its program accepts.

nginx checks the site with `nginx -t`, systemd the units with `systemd-analyze verify`, Docker Compose the
Compose file with `config`; the rest holds the files to each other and to the platform: the body cap is
the platform's, the env file names only real settings and the cluster the tests run on, the Compose
ClickHouse servers set every variable the shared cluster file reads, the agent's unit is the one
`hostatlas-agent install-service` writes. Last, the real nginx with this site in front of two real API
nodes: a client's own X-Forwarded-For does not get through, and GETs and POSTs keep being answered after
one node is SIGKILLed.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml  # type: ignore[import-untyped]
from hostatlas_agent import systemd as agent_systemd
from hostatlas_agent.config import DEFAULT_CONFIG_PATH

from hostatlas.cli import app as platform_cli
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.teams import service as teams
from hostatlas.teams.models import DEFAULT_TEAM_SLUG
from tests.conftest import _postgres_problem, private_postgres_schema, require_service
from tests.support import CLICKHOUSE_CLUSTER, bearer, free_port, hostatlas_command, issue_key, wait_until

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
NGINX_SITE = DEPLOY / "nginx" / "hostatlas.conf"
SYSTEMD = DEPLOY / "systemd"
COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yml"
ENV_FILE = DEPLOY / "hostatlas.env"
CLUSTER_XML = DEPLOY / "clickhouse" / "config.d" / "hostatlas-cluster.xml"
SECRETS = {"HOSTATLAS_DB_PASSWORD": "pw", "HOSTATLAS_SECRET_KEY": "key", "HOSTATLAS_SETUP_TOKEN": "token"}
UNITS = ("hostatlas-serve@.service", "hostatlas-worker@.service", "hostatlas-agent.service")
HARDENING = ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectKernelTunables", "ProtectControlGroups",
             "RestrictSUIDSGID", "LockPersonality")


# --- nginx ---------------------------------------------------------------------------------------------

def _nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    require_service("nginx", found is not None, "no nginx binary; Debian: apt-get install nginx-light")
    assert found is not None
    return found


def _self_signed(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(directory / "privkey.pem"), "-out", str(directory / "fullchain.pem")],
                   check=True, capture_output=True, timeout=60)


def _local_site(prefix: Path, nodes: list[str], http_port: int, https_port: int) -> Path:
    """The site as shipped, with only what must differ on loopback changed: the nodes' addresses (Compose
    service names do not resolve here), the listening ports and the certificate's directory. Each change
    must hit, or the rewrite has drifted from the file and the test says so."""
    site = NGINX_SITE.read_text()
    servers = re.findall(r"^(\s*server )(\S+)( max_fails)", site, flags=re.M)
    assert len(servers) == len(nodes), servers
    for (_, name, _), node in zip(servers, nodes, strict=True):
        site = site.replace(f"server {name} max_fails", f"server {node} max_fails", 1)
    rewrites = [("listen 80;", f"listen 127.0.0.1:{http_port};"),
                ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
                ("listen [::]:80;\n", ""), ("listen [::]:443 ssl;\n", ""),
                ("/etc/nginx/tls/", f"{prefix}/tls/")]
    for old, new in rewrites:
        assert old in site, old
        site = site.replace(old, new)
    _self_signed(prefix / "tls")
    temp_paths = " ".join(f"{kind}_temp_path {prefix}/{kind};" for kind in
                          ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "site.conf").write_text(site)
    main = prefix / "nginx.conf"
    # As root, nginx's workers would run as `nobody`, which cannot enter a test's private directories.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main.write_text(f"{user}pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\nevents {{}}\n"
                    f"http {{\n access_log off;\n {temp_paths}\n include site.conf;\n}}\n")
    return main


def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    nginx = _nginx()
    main = _local_site(tmp_path, ["127.0.0.1:9", "127.0.0.1:10"], free_port(), free_port())
    done = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert "[warn]" not in done.stderr and "[emerg]" not in done.stderr, done.stderr


def _directive(text: str, name: str) -> list[str]:
    return [value.strip() for value in re.findall(rf"^\s*{name}\s+([^;]+);", text, flags=re.M)]


def _size(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 ** 3}
    match = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert match, value
    return int(match.group(1)) * units[match.group(2)]


def test_nginx_body_cap_is_the_platforms() -> None:
    site = NGINX_SITE.read_text()
    platform_cap = Settings.model_fields["max_body_bytes"].default
    assert [_size(v) for v in _directive(site, "client_max_body_size")] == [platform_cap]
    # Bodies held in memory whole, so that a refused connection can be retried on the other node.
    assert _size(_directive(site, "client_body_buffer_size")[0]) >= platform_cap


def test_nginx_replaces_forwarded_for_and_never_resends_a_post() -> None:
    site = NGINX_SITE.read_text()
    assert "$proxy_add_x_forwarded_for" not in site
    assert "X-Forwarded-For $remote_addr" in _directive(site, "proxy_set_header")
    retry_on = _directive(site, "proxy_next_upstream")
    assert retry_on and all("non_idempotent" not in value for value in retry_on)
    assert _directive(site, "keepalive_timeout") == ["4s"]  # under uvicorn's 5 s keep-alive
    assert re.search(r"location = /metrics \{\s*return 404;", site)
    assert len(re.findall(r"^\s*server \S+ max_fails=\d+ fail_timeout=\d+s;", site, flags=re.M)) >= 2


# --- systemd -------------------------------------------------------------------------------------------

def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def _cli_accepts(args: list[str]) -> None:
    """Raises unless the platform's own command line parses ``args`` (a subcommand and its options)."""
    group = typer.main.get_command(platform_cli)
    command = group.commands[args[0]]  # type: ignore[attr-defined]
    command.make_context(args[0], args[1:])


@pytest.mark.parametrize(("unit", "command"), [("hostatlas-serve@.service", ["serve", "--no-worker"]),
                                               ("hostatlas-worker@.service", ["worker"])])
def test_platform_units_run_the_command_the_docs_name(unit: str, command: list[str]) -> None:
    service = _unit(unit)["Service"]
    executable, *args = service["ExecStart"].split()
    assert executable == "/opt/hostatlas/.venv/bin/hostatlas"
    assert args[: len(command)] == command
    substituted = [{"${HOSTATLAS_LISTEN_HOST}": "127.0.0.1", "%i": "8001"}.get(arg, arg) for arg in args]
    _cli_accepts(substituted)
    assert service["Restart"] == "always"
    assert service["EnvironmentFile"] == "/etc/hostatlas/hostatlas.env"
    assert service["User"] == "hostatlas"
    for key in HARDENING:
        assert key in service, key


def test_serve_unit_lets_the_storer_drain_before_anything_is_killed() -> None:
    service = _unit("hostatlas-serve@.service")["Service"]
    assert service["KillMode"] == "mixed"
    # The storer gets up to 60 s to store what the node acknowledged (telemetry/ingest/storer.py).
    assert int(service["TimeoutStopSec"]) > 60


def test_agent_unit_is_the_one_install_service_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a host where install-service created its user: the accounts are the only host-specific input.
    monkeypatch.setattr(agent_systemd, "_user_exists", lambda name: True)
    monkeypatch.setattr(agent_systemd, "_group_exists", lambda name: True)
    written = agent_systemd.unit_text("/usr/local/bin/hostatlas-agent", str(DEFAULT_CONFIG_PATH))
    assert (SYSTEMD / agent_systemd.UNIT_NAME).read_text() == written


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    require_service("systemd-analyze", analyze is not None, "no systemd-analyze")
    assert analyze is not None
    # The programs are not installed here: point ExecStart at one that is, so that verify judges the rest.
    text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", (SYSTEMD / unit).read_text(), flags=re.M)
    instance = tmp_path / unit.replace("@.", "@1.")
    instance.write_text(text)
    done = subprocess.run([analyze, "verify", "--man=no", str(instance)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values, and only says so: any word from it is a finding.
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr + done.stdout


# --- the env file and the cluster ----------------------------------------------------------------------

def _env_file() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_env_file_names_only_settings_hostatlas_knows() -> None:
    env = _env_file()
    fields = Settings.model_fields
    unknown = [key for key in env if not key.startswith("HOSTATLAS_") or key[len("HOSTATLAS_"):].lower() not in fields]
    assert unknown == []
    settings = Settings.model_validate({key[len("HOSTATLAS_"):].lower(): value for key, value in env.items()})
    assert settings.clickhouse_cluster == CLICKHOUSE_CLUSTER  # the cluster the tests' topology runs on


def _cluster_xml() -> ET.Element:
    return ET.parse(CLUSTER_XML).getroot()


def test_env_file_names_a_cluster_of_the_shared_cluster_file() -> None:
    remote_servers = _cluster_xml().find("remote_servers")
    assert remote_servers is not None
    clusters = {element.tag: element for element in remote_servers}
    cluster = clusters[_env_file()["HOSTATLAS_CLICKHOUSE_CLUSTER"]]
    assert len(cluster.findall("shard")) == 2


# --- Docker Compose ------------------------------------------------------------------------------------

def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _mounts(service: dict[str, Any]) -> dict[str, Path | str]:
    """Container path -> host path (resolved against the Compose file's directory) or volume name."""
    mounts: dict[str, Path | str] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = (COMPOSE_FILE.parent / source).resolve() if source.startswith(".") else source
    return mounts


def test_compose_runs_two_api_nodes_and_a_worker_on_the_shared_settings() -> None:
    services = _compose()["services"]
    assert {"postgres", "zookeeper", "clickhouse1", "clickhouse2", "redis", "nginx"} <= set(services)
    nodes = {name: s for name, s in services.items() if _command(s)[:2] == ["hostatlas", "serve"]}
    workers = [name for name, s in services.items() if _command(s)[:2] == ["hostatlas", "worker"]]
    assert len(nodes) == 2 and len(workers) == 1
    for name, node in nodes.items():
        assert "--no-worker" in _command(node), name
        _cli_accepts(_command(node)[1:])
    for name in [*nodes, *workers, "migrate"]:
        assert (COMPOSE_FILE.parent / services[name]["env_file"]).resolve() == ENV_FILE, name
        assert "HOSTATLAS_SECRET_KEY" in services[name]["environment"], name
    # Every node keeps its spool on a volume of its own.
    spools = [_mounts(node)["/var/lib/hostatlas"] for node in nodes.values()]
    assert len(set(spools)) == len(spools)


def test_compose_clickhouse_servers_set_everything_the_cluster_file_reads() -> None:
    services = _compose()["services"]
    wanted = {element.get("from_env") for element in _cluster_xml().iter() if element.get("from_env")}
    shards = []
    for name in ("clickhouse1", "clickhouse2"):
        server = services[name]
        assert server["image"].startswith("clickhouse/clickhouse-server:")
        config_dir = "/etc/clickhouse-server/config.d/"
        assert _mounts(server)[config_dir + CLUSTER_XML.name] == CLUSTER_XML
        assert wanted <= set(server["environment"]), wanted - set(server["environment"])
        shards.append((server["environment"]["HOSTATLAS_CH_SHARD"], server["environment"]["HOSTATLAS_CH_REPLICA"]))
        hosts = {server["environment"][f"HOSTATLAS_CH_SHARD{n}_HOST"] for n in (1, 2)}
        assert hosts == {"clickhouse1", "clickhouse2"}
    assert len(set(shards)) == 2


def test_compose_nginx_is_the_site_in_front_of_the_api_nodes_and_the_trusted_proxy() -> None:
    services = _compose()["services"]
    nginx = services["nginx"]
    assert _mounts(nginx)["/etc/nginx/conf.d/default.conf"] == NGINX_SITE
    upstream = re.findall(r"^\s*server (\S+):(\d+) max_fails", NGINX_SITE.read_text(), flags=re.M)
    nodes = {(name, s["command"][s["command"].index("--port") + 1]) for name, s in services.items()
             if _command(s)[:2] == ["hostatlas", "serve"]}
    assert set(upstream) == nodes
    address = nginx["networks"]["hostatlas"]["ipv4_address"]
    assert _env_file()["HOSTATLAS_TRUSTED_PROXIES"] == address


def _compose_cli() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 timeout=30).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


def test_docker_compose_accepts_the_file_and_insists_on_the_secrets() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (the YAML is checked above)")
    base = [*cli, "-f", str(COMPOSE_FILE), "config", "-q"]
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    done = subprocess.run(base, capture_output=True, text=True, timeout=60, env={**clean, **SECRETS})
    assert done.returncode == 0, done.stderr
    without_key = {**clean, **{k: v for k, v in SECRETS.items() if k != "HOSTATLAS_SECRET_KEY"}}
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60, env=without_key)
    assert refused.returncode != 0 and "HOSTATLAS_SECRET_KEY" in refused.stderr


# --- nginx in front of two real API nodes ----------------------------------------------------------------

@contextmanager
def _node(workdir: Path, env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = open(workdir / f"serve-{port}.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen([*hostatlas_command(), "serve", "--no-worker", "--port", str(port)],
                               cwd=workdir, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200,
                  process, workdir / f"serve-{port}.log")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def _wait_for(ready: Any, process: subprocess.Popen[bytes], log: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args!r} did not start: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    problem = _postgres_problem()
    require_service("PostgreSQL", problem is None, problem or "")
    with private_postgres_schema("hostatlas_deploy") as url:
        yield url


def _admin_key(database_url: str, name: str = "deploy") -> str:
    db = Database(database_url)
    try:
        with db.session(write=False) as session:
            team_id = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG).id
        return issue_key(db, team_id, ["*"], name=name)
    finally:
        db.dispose()


def _assert_forwarded_for_is_replaced(client: httpx.Client, database_url: str, admin: dict[str, str],
                                      node_url: str) -> None:
    """A client's own X-Forwarded-For is recorded nowhere through nginx, although a node believes the header
    from loopback: sent to the node directly, the same made-up address is taken for the client's."""
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    client.get("/api/v1/servers", headers={**bearer(_admin_key(database_url, "via-nginx")), **spoofed})
    httpx.get(f"{node_url}/api/v1/servers", headers={**bearer(_admin_key(database_url, "direct")), **spoofed})

    def recorded() -> dict[str, str | None]:
        keys = client.get("/api/v1/api-keys", headers=admin).json()["data"]
        return {key["name"]: key["last_used_ip"] for key in keys if key["name"] in ("via-nginx", "direct")}

    wait_until(lambda: None not in recorded().values() and len(recorded()) == 2, timeout=20)
    assert recorded() == {"via-nginx": "127.0.0.1", "direct": "203.0.113.9"}


@pytest.mark.postgres
@pytest.mark.timeout(300)  # two API nodes starting on a busy machine take a while
def test_nginx_keeps_answering_when_an_api_node_is_killed(tmp_path: Path, postgres_url: str) -> None:
    nginx = _nginx()
    ports = [free_port(), free_port()]
    https_port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    main = _local_site(prefix, [f"127.0.0.1:{port}" for port in ports], free_port(), https_port)
    env = {"HOSTATLAS_DATABASE_URL": postgres_url, "HOSTATLAS_TRUSTED_PROXIES": "127.0.0.1",
           "HOSTATLAS_LOCAL_AGENT": "false", "HOSTATLAS_RATE_LIMIT": "100000/minute", "HOSTATLAS_LOG_LEVEL": "WARNING"}
    # One node at a time: the first has migrated by the time the second starts (docs/deploy.md, upgrades).
    with _node(tmp_path, env, ports[0]) as first, _node(tmp_path, env, ports[1]):
        headers = {"Authorization": f"Bearer {_admin_key(postgres_url)}"}
        proxy = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(main), "-g", "daemon off;"])
        try:
            with httpx.Client(base_url=f"https://127.0.0.1:{https_port}", verify=False, timeout=10) as client:
                _wait_for(lambda: client.get("/healthz").status_code == 200, proxy, prefix / "error.log")
                register = client.post("/api/v1/agent/register", headers=headers, json={
                    "machine_id": "deploy-test", "hostname": "deploy-test", "ip_address": "10.0.0.1", "os": "Linux",
                    "kernel": "6", "cpu_cores": 2, "ram_total_mb": 1024, "agent_version": "1"})
                assert register.status_code in (200, 201), register.text
                agent = {"Authorization": f"Bearer {register.json()['agent_token']}"}
                _assert_forwarded_for_is_replaced(client, postgres_url, headers, f"http://127.0.0.1:{ports[1]}")
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
                # Check-ins first, while nginx still takes the dead node for alive: round robin sends one of the
                # first two to it, the connection is refused, and nginx passes the POST (never sent) on.
                statuses = [client.post("/api/v1/agent/check-in", headers=agent,
                                        json={"agent_version": "1", "uptime_s": 1}).status_code for _ in range(6)]
                statuses += [client.get("/api/v1/servers", headers=headers).status_code for _ in range(6)]
                assert statuses == [200] * 12
                refused = [line for line in (prefix / "error.log").read_text().splitlines() if "refused" in line]
                assert any("POST /api/v1/agent/check-in" in line for line in refused), refused
        finally:
            proxy.terminate()
            proxy.wait(timeout=20)

