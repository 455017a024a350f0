"""The platform's own host, monitored out of the box: ``hostatlas serve`` on the embedded default (SQLite)
enrols this host into the ``default`` team and runs ``hostatlas-agent run`` beside itself, as a child process.

- Enrolment is in-process, through the same domain function as ``POST /api/v1/agent/register``, so no API
  key is needed. The same machine id at every start is the same server: a fresh token, the old one revoked.
- The agent's state (credentials, log offsets, spool) and its config and log live in ``<data dir>/local-agent/``.
- The child goes when ``serve`` goes: terminated (SIGTERM, then SIGKILL after 10 s) when uvicorn returns, and,
  on Linux, sent SIGTERM by the kernel if ``serve`` itself is killed (``PR_SET_PDEATHSIG``). Elsewhere a
  SIGKILLed ``serve`` leaves the agent running until it is stopped by hand.

Composition code: it builds on the servers, teams and agent API features and on the agent package.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import structlog
from hostatlas_agent import host as agent_host
from hostatlas_agent.state import Credentials, StateDir

from hostatlas.agentapi.schemas import RegisterRequest
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.errors import DomainError
from hostatlas.jobs import SERVER_VIEWS
from hostatlas.servers import service as servers
from hostatlas.servers.agent_auth import AgentAuthenticator
from hostatlas.settings import Settings
from hostatlas.teams import service as teams
from hostatlas.teams.models import DEFAULT_TEAM_SLUG

log = structlog.get_logger(__name__)

STATE_DIR_NAME = "local-agent"
STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
LOOPBACK_ALIASES = {"", "0.0.0.0", "::", "localhost"}


def wanted(flag: bool | None, settings: Settings) -> bool:
    """``--local-agent``/``--no-local-agent`` decide; without either, on for SQLite when the setting allows it
    (a PostgreSQL deployment is a fleet's platform, whose host is monitored like any other, if at all)."""
    if flag is not None:
        return flag
    return settings.local_agent and settings.resolved_database_url.startswith("sqlite")


def platform_url(host: str, port: int) -> str:
    """Where a process on this host reaches ``serve --host HOST --port PORT``."""
    if host in LOOPBACK_ALIASES:
        return f"http://127.0.0.1:{port}"
    try:
        is_v6 = ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        is_v6 = False  # a host name
    return f"http://[{host.strip('[]')}]:{port}" if is_v6 else f"http://{host}:{port}"


def state_dir(settings: Settings) -> Path:
    return (settings.data_dir / STATE_DIR_NAME).resolve()


def enrol(db: Database, settings: Settings, url: str, directory: Path) -> Credentials | None:
    """Enrol this host into the ``default`` team and save the credentials in ``directory``; None (logged) when
    there is no ``default`` team or it cannot take another server."""
    facts = RegisterRequest.model_validate(agent_host.facts(directory))
    try:
        with db.session(write=True) as session:
            team = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG)
            # A throwaway token cache: the serving app loads every token when it starts, after this.
            enrolment = servers.register(session, team, servers.HostFacts(**facts.model_dump()), utcnow(),
                                         views=SERVER_VIEWS,
                                         token_cache=AgentAuthenticator(settings.agent_auth_cache_seconds))
            server_id, token = enrolment.server.id, enrolment.token
    except DomainError as error:
        log.warning("local_agent_not_started", team=DEFAULT_TEAM_SLUG, reason=error.message)
        return None
    credentials = Credentials(url=url, server_id=server_id, agent_token=token, machine_id=facts.machine_id)
    StateDir(directory).save_credentials(credentials)
    return credentials


def _toml_string(value: str) -> str:
    # A JSON string without \\u escapes of non-ASCII (TOML has no surrogate pairs) is a TOML basic string.
    return json.dumps(value, ensure_ascii=False)


def write_config(directory: Path, url: str) -> Path:
    """``agent.toml``: keys are ``hostatlas_agent.config.AgentConfig`` fields; everything else is its default."""
    path = directory / "agent.toml"
    path.write_text(f"# Written by `hostatlas serve` at every start.\nurl = {_toml_string(url)}\n"
                    f"state_dir = {_toml_string(str(directory))}\n", encoding="utf-8")
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the kernel sends the agent SIGTERM when the thread that started it (serve's main thread) ends,
    SIGKILL included. If serve already died before this ran, the child is an orphan: stop at once."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        os._exit(0)


@dataclass
class LocalAgent:
    server_id: int
    directory: Path
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (the agent flushes what it holds), then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("local_agent_killed", pid=self.process.pid, reason=f"did not stop in {timeout:.0f} s")
            self.process.kill()
            self.process.wait()


def spawn(config: Path, directory: Path) -> subprocess.Popen[bytes]:
    with open(directory / "agent.log", "ab") as output:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "hostatlas_agent", "run", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # noqa: PLW1509


def start(db: Database, settings: Settings, *, host: str, port: int) -> LocalAgent | None:
    """Enrol this host and start its agent; None when it could not be enrolled (a warning says why)."""
    directory = state_dir(settings)
    StateDir(directory).ensure()
    url = platform_url(host, port)
    credentials = enrol(db, settings, url, directory)
    if credentials is None:
        return None
    process = spawn(write_config(directory, url), directory)
    log.info("local_agent_started", server_id=credentials.server_id, pid=process.pid, directory=str(directory),
             turn_off="hostatlas serve --no-local-agent, or HOSTATLAS_LOCAL_AGENT=false")
    return LocalAgent(server_id=credentials.server_id, directory=directory, process=process)
