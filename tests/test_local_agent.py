"""`hostatlas serve` on the embedded default runs a local agent for its own host, enrolled into `default`:
real `serve` processes, the real agent as their child, real sockets. ``--no-local-agent`` turns it off, the
agent goes when serve goes (also when serve is SIGKILLed, on Linux), and the address rule for its URL."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hostatlas.localagent import platform_url
from tests.support import free_port, hostatlas_command, running_server, wait_until

pytestmark = pytest.mark.long_running(65)

AGENT_RUNNER = Path(__file__).resolve().parents[1] / "agent" / "src" / "hostatlas_agent" / "runner.py"


def _env(data: Path) -> dict[str, str]:
    # conftest turns the local agent off for every other serve: on here, on a fresh embedded database.
    return {"HOSTATLAS_LOCAL_AGENT": "true", "HOSTATLAS_DATA_DIR": str(data),
            "HOSTATLAS_DATABASE_URL": f"sqlite:///{data / 'hostatlas.db'}"}


def _api_key(workdir: Path, env: dict[str, str]) -> str:
    created = subprocess.run([*hostatlas_command(), "apikey", "create", "--name", "t", "--scopes", "*"],
                             cwd=workdir, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def _get(base: str, key: str, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {key}"}, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _agent_pid(workdir: Path) -> int:
    """The agent's pid, from serve's `local_agent_started` line."""
    [log] = workdir.glob("serve-*.log")
    found = re.search(r"local_agent_started.*?\bpid=(\d+)", log.read_text())
    assert found, f"serve logged no local_agent_started:\n{log.read_text()}"
    return int(found.group(1))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by a dead parent's successor) is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _agent_log(data: Path) -> str:
    path = data / "local-agent" / "agent.log"
    return path.read_text()[-4000:] if path.exists() else "(no agent.log)"


def test_serve_enrols_this_host_and_its_agent_reports(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = _env(data)
    with running_server(tmp_path, env) as base:
        state = data / "local-agent"
        credentials = json.loads((state / "credentials.json").read_text())
        assert (state / "credentials.json").stat().st_mode & 0o777 == 0o600
        assert credentials["url"] == base and credentials["agent_token"].startswith("agt_")
        config = (state / "agent.toml").read_text()
        assert f'url = "{base}"' in config and f'state_dir = "{state.resolve()}"' in config
        pid = _agent_pid(tmp_path)

        key = _api_key(tmp_path, env)
        [server] = _get(base, key, "/api/v1/servers")["data"]
        assert server["id"] == credentials["server_id"] and server["hostname"] == socket.gethostname()

        # From here on it is the agent's own work (`hostatlas-agent run`): say so when it is not there.
        if not AGENT_RUNNER.exists():
            pytest.fail(f"the agent's runner ({AGENT_RUNNER}) does not exist yet: enrolment and spawn work, the "
                        "agent cannot report", pytrace=False)

        def reporting() -> bool:
            series = _get(base, key, f"/api/v1/servers/{server['id']}/metrics", metric="cpu.percent",
                          **{"from": "-10m"})["data"]
            return any(s["points"] for s in series)

        try:
            wait_until(reporting, timeout=60, interval=1)
        except AssertionError:
            pytest.fail(f"the local agent sent no cpu.percent within 60 s; its log:\n{_agent_log(data)}",
                        pytrace=False)
        [server] = _get(base, key, "/api/v1/servers")["data"]
        assert server["status"] == "online" and _alive(pid), _agent_log(data)
    # serve stopped: so did its agent.
    wait_until(lambda: not _alive(pid), timeout=15, interval=0.2)

    # The same machine again next start: the same server, with a fresh token.
    with running_server(tmp_path, env) as base:
        again = json.loads((data / "local-agent" / "credentials.json").read_text())
        assert again["server_id"] == credentials["server_id"] and again["agent_token"] != credentials["agent_token"]
        assert _get(base, key, "/api/v1/servers")["meta"]["total"] == 1


def test_no_local_agent_enrols_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = _env(data)
    with running_server(tmp_path, env, extra_args=("--no-local-agent",)) as base:
        key = _api_key(tmp_path, env)
        time.sleep(3)
        assert _get(base, key, "/api/v1/servers")["meta"]["total"] == 0
    assert not (data / "local-agent").exists()
    [log] = tmp_path.glob("serve-*.log")
    assert "local_agent_started" not in log.read_text()


def test_without_the_flag_only_the_embedded_default_gets_one(tmp_path: Path) -> None:
    """HOSTATLAS_LOCAL_AGENT=false (as conftest sets for the suite) and no flag: no agent."""
    data = tmp_path / "data"
    env = {**_env(data), "HOSTATLAS_LOCAL_AGENT": "false"}
    with running_server(tmp_path, env):
        pass
    assert not (data / "local-agent").exists()


@contextmanager
def _bare_serve(workdir: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    with open(workdir / f"serve-{port}.log", "wb") as log:
        process = subprocess.Popen([*hostatlas_command(), "serve", "--port", str(port)], cwd=workdir,
                                   env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert process.poll() is None, (workdir / f"serve-{port}.log").read_text()
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=60, interval=0.1)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_agent_dies_with_a_killed_serve(tmp_path: Path) -> None:
    with _bare_serve(tmp_path, _env(tmp_path / "data")) as (process, _):
        pid = _agent_pid(tmp_path)
        assert _alive(pid)
        process.send_signal(signal.SIGKILL)
        process.wait()
        wait_until(lambda: not _alive(pid), timeout=15, interval=0.2)


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.0.1", "http://127.0.0.1:8000"), ("0.0.0.0", "http://127.0.0.1:8000"), ("::", "http://127.0.0.1:8000"),
    ("localhost", "http://127.0.0.1:8000"), ("10.0.1.12", "http://10.0.1.12:8000"),
    ("::1", "http://[::1]:8000"), ("[fd00::5]", "http://[fd00::5]:8000"), ("atlas.lan", "http://atlas.lan:8000")])
def test_the_agent_reaches_serve_where_it_listens(host: str, url: str) -> None:
    assert platform_url(host, 8000) == url
