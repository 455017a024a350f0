"""The real agent (``python -m hostatlas_agent``) against a real ``hostatlas serve`` on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import bearer, hostatlas_command, wait_until

# Short everything, so a test sees a minute of agent life in seconds.
FAST = {"metrics_interval": 1, "checkin_interval": 1, "config_interval": 1, "log_interval": 0.2,
        "discovery_interval": 1, "discovery_max_age": 30, "crash_interval": 0.3, "crash_followup_interval": 2,
        "retry_max_backoff": 1, "request_timeout": 5, "served_certificates": False, "log_level": "DEBUG"}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    lines = [f"{key} = {toml_value(value)}" for key, value in settings.items() if key != "watch"]
    for spec in settings.get("watch", []):
        lines.append("[[watch]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in spec.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hostatlas_agent", *args]


def create_key(workdir: Path, scopes: str = "*") -> str:
    created = subprocess.run([*hostatlas_command(), "apikey", "create", "--name", "agent-test", "--scopes", scopes],
                             cwd=workdir, capture_output=True, text=True, check=True,
                             env={**os.environ, "HOSTATLAS_DATABASE_URL": ""})
    return created.stdout.strip().splitlines()[-1]


@dataclass
class AgentUnderTest:
    workdir: Path
    config_path: Path
    base: str
    key: str
    process: subprocess.Popen[bytes] | None = None
    server_id: int = 0
    log_path: Path = field(default_factory=Path)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(agent_command("--config", str(self.config_path), *args), capture_output=True,
                              text=True, timeout=60, check=check)

    def enrol(self) -> int:
        done = self.cli("enrol", "--url", self.base, "--key", self.key)
        assert "enrolled" in done.stdout, done.stdout + done.stderr
        credentials = json.loads((self.workdir / "state" / "credentials.json").read_text())
        self.server_id = int(credentials["server_id"])
        return self.server_id

    def start(self) -> None:
        self.log_path = self.workdir / "agent.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(agent_command("--config", str(self.config_path), "run"),
                                            stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def status(self) -> dict[str, Any]:
        """The agent's status file (what `hostatlas-agent status` prints), {} until it is first written."""
        try:
            return dict(json.loads((self.workdir / "state" / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: Any) -> Any:
        answer = httpx.get(self.base + path, params=params, headers=bearer(self.key), timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def eventually(self, probe: Any, what: str, timeout: float = 30.0) -> Any:
        found: list[Any] = []

        def check() -> bool:
            value = probe()
            if value:
                found.append(value)
                return True
            return False

        try:
            wait_until(check, timeout=timeout, interval=0.25)
        except AssertionError as exc:
            raise AssertionError(f"{what}: not within {timeout} s; agent output:\n{self.output()[-4000:]}") from exc
        return found[-1]


@contextmanager
def running_agent(workdir: Path, base: str, key: str, **settings: Any) -> Iterator[AgentUnderTest]:
    """Enrolled and running, with the FAST intervals unless told otherwise; stopped (SIGTERM) at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"url": base, "state_dir": workdir / "state", "nginx_configs": [], "apache_configs": [],
              "certificate_paths": [], "docker_socket": str(workdir / "no-docker.sock"), **FAST, **settings}
    agent = AgentUnderTest(workdir, write_config(workdir / "agent.toml", config), base, key)
    agent.enrol()
    agent.start()
    try:
        # Enrolment alone marks the server seen; the status file says the agent's first round has run (the
        # tailer has its place in every file, the first metrics are spooled).
        agent.eventually(lambda: agent.status().get("pid") == (agent.process.pid if agent.process else None),
                         "the agent's first status")
        yield agent
    finally:
        agent.stop()

