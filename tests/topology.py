"""A multi-node HostAtlas on loopback: API nodes (``serve --no-worker``) and ``worker`` processes as real
processes sharing one database, Redis and ClickHouse — the deployment of docs/deploy.md, for tests and benches.

Each API node has a data directory of its own (its telemetry spool lives there, as on a machine of its own)
and keeps its port for life, so a node killed and started again is the same node recovering its spool. Every
process writes its output to a file under the work directory; a process that fails to start raises with the
file's tail. Imports only the standard library, httpx, hostatlas and tests.support: bench/soak.py uses it too.

The schema is migrated once (``hostatlas migrate``) before any process starts. ``serve`` and ``worker``
migrate on start as well, which on an up-to-date database only reads the version; several processes
upgrading one database at the same moment is what an upgrade must avoid (docs/deploy.md): migrate first,
then start the rest. (Two ``hostatlas migrate`` at once on an empty PostgreSQL schema both exited 0 in a
trial here; one migrator is still the rule.) They then all start at once: each makes the telemetry
store's tables if missing (``CREATE ... IF NOT EXISTS``, ``ON CLUSTER`` on a cluster), which four processes
doing at the same moment on a fresh database do without error (tried on the two-shard test cluster).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hostatlas.secretbox import Keyring
from tests.support import free_port, hostatlas_command

START_TIMEOUT = 180.0  # a loaded machine (xdist, CI, two cores shared): 90 s was once not enough here
STOP_TIMEOUT = 30.0
LOG_TAIL = 6000
ENGINE_VARIABLES = ("HOSTATLAS_DATABASE_URL", "HOSTATLAS_REDIS_URL", "HOSTATLAS_CLICKHOUSE_URL",
                    "HOSTATLAS_CLICKHOUSE_CLUSTER", "HOSTATLAS_DATA_DIR", "HOSTATLAS_TELEMETRY_SPOOL_DIR")


def environment(overlay: dict[str, str]) -> dict[str, str]:
    """The caller's environment without its engine settings (what the topology does not set stays unset, not
    inherited from a developer's shell), then ``overlay``."""
    inherited = {name: value for name, value in os.environ.items() if name not in ENGINE_VARIABLES}
    return {**inherited, **overlay}


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL:]
    except FileNotFoundError:
        return "(no output)"


def _rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def _children(pid: int) -> list[int]:
    """Each thread lists the children it started (a storer may be started from any thread)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return sorted(found)


@dataclass
class _Process:
    """One command in its own process group (so that a kill reaches the children it started, as a machine or
    container dying would), its output in ``<workdir>/<name>.log`` (appended: a restart keeps the history)."""

    name: str
    args: list[str]
    env: dict[str, str]
    directory: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _started_at: float = 0.0
    _stop_asked_at: float | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.note("starting")
        self._started_at, self._stop_asked_at = time.monotonic(), None
        with open(self.log_path, "ab") as log:
            # cwd: the process's own directory, so no stray .env file of the caller's is read.
            self.process = subprocess.Popen([*hostatlas_command(), *self.args], cwd=self.directory,
                                            env=environment(self.env), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the process and everything in its group (a node's storer): nothing gets to clean up."""
        if self.process is None:
            return
        was_running = self.process.poll() is None
        self._reap_group()
        self.process.wait(timeout=STOP_TIMEOUT)
        if was_running:
            self.note("killed (SIGKILL to its process group)")

    def freeze(self) -> None:
        """SIGSTOP its process group: alive (connections open, leases held) but doing nothing, as a hung host."""
        self._signal_group(signal.SIGSTOP, "frozen (SIGSTOP)")

    def thaw(self) -> None:
        self._signal_group(signal.SIGCONT, "thawed (SIGCONT)")

    def _signal_group(self, signum: signal.Signals, what: str) -> None:
        assert self.running, f"{self.name} is not running"
        os.killpg(self.pid, signum)
        self.note(what)

    def ask_to_stop(self) -> None:
        """SIGTERM, once: a second one could arrive after the process restored the default handler on its way
        out and kill it mid-cleanup."""
        if self.process is not None and self.process.poll() is None and self._stop_asked_at is None:
            self._stop_asked_at = time.monotonic()
            self.process.terminate()
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGCONT)  # a frozen process acts on SIGTERM once continued

    def stop(self) -> int | None:
        """SIGTERM and wait for a clean exit (killed after STOP_TIMEOUT); the exit code, None if not started."""
        if self.process is None:
            return None
        self.ask_to_stop()
        if self._stop_asked_at is not None:
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
            self.note(f"stopped in {time.monotonic() - self._stop_asked_at:.1f} s "
                      f"(exit code {self.process.returncode})")
            self._stop_asked_at = None
        self._reap_group()
        return self.process.returncode

    def _reap_group(self) -> None:
        # A child the process started (a storer) outliving it would hold its spool directory's lock.
        assert self.process is not None
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def note(self, text: str) -> None:
        """A line in the process's log from the launcher, timed, so a slow start or stop shows where."""
        with open(self.log_path, "a") as log:
            log.write(f"===== {self.name} {text} at {time.strftime('%H:%M:%S')} =====\n")

    def failed_to_start(self, why: str) -> RuntimeError:
        return RuntimeError(f"{self.name} {why}; its output ({self.log_path}):\n{_tail(self.log_path)}")

    def rss(self) -> dict[str, int]:
        """Resident memory of the process and of each child (``<name>.child<N>``, e.g. a node's storer)."""
        found: dict[str, int] = {}
        if not self.running:
            return found
        own = _rss_bytes(self.pid)
        if own is not None:
            found[self.name] = own
        for number, child in enumerate(_children(self.pid), start=1):
            size = _rss_bytes(child)
            if size is not None:
                found[f"{self.name}.child{number}"] = size
        return found


@dataclass
class Node(_Process):
    """One API node: ``hostatlas serve --no-worker`` on its own port and data directory."""

    port: int = 0
    ready_path: str = "/readyz"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.directory

    def start(self, *, wait: bool = True) -> None:
        """Start (or restart: same port, same data directory, so its spool is recovered) and wait until ready."""
        self._spawn()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.running:
                raise self.failed_to_start("exited while starting")
            try:
                answer = httpx.get(self.url + self.ready_path, timeout=2)
                if answer.status_code == 200:
                    self.note(f"ready after {time.monotonic() - self._started_at:.1f} s")
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        raise self.failed_to_start(f"was not ready at {self.ready_path} within {timeout:.0f} s (last: {last})")


@dataclass
class WorkerProcess(_Process):
    """One ``hostatlas worker``: started once it logs ``worker_started`` (its signal handlers are in place)."""

    _started_before: int = 0  # how many starts its log already shows (a restart appends to it)

    def start(self, *, wait: bool = True) -> None:
        self._started_before = self._starts_logged()
        self._spawn()
        if wait:
            self.wait_started()

    def wait_started(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise self.failed_to_start("exited while starting")
            if self._starts_logged() > self._started_before:
                self.note(f"running after {time.monotonic() - self._started_at:.1f} s")
                return
            time.sleep(0.05)
        raise self.failed_to_start(f"did not log worker_started within {timeout:.0f} s")

    def _starts_logged(self) -> int:
        return self.log_path.read_text(errors="replace").count("worker_started") if self.log_path.exists() else 0


@dataclass
class Topology:
    workdir: Path
    env: dict[str, str]  # the shared HOSTATLAS_* environment every process gets
    nodes: list[Node] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def rss_by_process(self) -> dict[str, int]:
        """Resident bytes of every running process (and its children), by name: ``node-a``, ``node-a.child1``
        (its telemetry storer), ``worker-1``."""
        found: dict[str, int] = {}
        for process in [*self.nodes, *self.workers]:
            found.update(process.rss())
        return found

    def logs(self) -> str:
        """Every process's output tail, for a failing test's message."""
        return "\n".join(f"--- {process.name} ---\n{_tail(process.log_path)}"
                         for process in [*self.nodes, *self.workers])

    def migrate(self) -> None:
        done = subprocess.run([*hostatlas_command(), "migrate"], cwd=self.workdir, env=environment(self.env),
                              capture_output=True, text=True, timeout=START_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"hostatlas migrate failed:\n{done.stdout[-LOG_TAIL:]}\n{done.stderr[-LOG_TAIL:]}")

    def stop(self) -> None:
        # SIGTERM to all first, then wait for each: they stop in parallel.
        for process in [*self.workers, *self.nodes]:
            process.ask_to_stop()
        for process in [*self.workers, *self.nodes]:
            process.stop()


def shared_env(*, database_url: str, redis_url: str | None = None, clickhouse_url: str | None = None,
               clickhouse_cluster: str | None = None, env: dict[str, str] | None = None) -> dict[str, str]:
    """What every process of one install shares: the engines, the platform key, the dashboard's setup token."""
    shared = {
        "HOSTATLAS_DATABASE_URL": database_url,
        # Secrets sealed by one process are opened by the others: one key for all (the caller's, if set).
        "HOSTATLAS_SECRET_KEY": os.environ.get("HOSTATLAS_SECRET_KEY") or Keyring.new_key(),
        "HOSTATLAS_SETUP_TOKEN": os.environ.get("HOSTATLAS_SETUP_TOKEN") or Keyring.new_key()[:32],
        "HOSTATLAS_LOCAL_AGENT": "false",
    }
    engines = {"HOSTATLAS_REDIS_URL": redis_url, "HOSTATLAS_CLICKHOUSE_URL": clickhouse_url,
               "HOSTATLAS_CLICKHOUSE_CLUSTER": clickhouse_cluster}
    shared.update({name: value for name, value in engines.items() if value})
    return {**shared, **(env or {})}


@contextmanager
def topology(workdir: Path, *, database_url: str, redis_url: str | None = None, clickhouse_url: str | None = None,
             clickhouse_cluster: str | None = None, nodes: int = 2, workers: int = 1,
             env: dict[str, str] | None = None, serve_args: tuple[str, ...] = ("--no-access-log",),
             node_env: dict[str, dict[str, str]] | None = None) -> Iterator[Topology]:
    """Migrate, start ``nodes`` API nodes (node-a, node-b, ...) and ``workers`` workers, wait until every node
    answers /readyz and every worker runs; stop them all (SIGTERM) at exit. ``node_env``: settings of one node
    by name, over ``env`` (change ``node.env`` before a restart to change them again)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shared = shared_env(database_url=database_url, redis_url=redis_url, clickhouse_url=clickhouse_url,
                        clickhouse_cluster=clickhouse_cluster, env=env)
    running = Topology(workdir=workdir, env=shared)
    for index in range(nodes):
        name = f"node-{chr(ord('a') + index)}"
        port = free_port()
        running.nodes.append(Node(
            name=name, args=["serve", "--no-worker", "--port", str(port), *serve_args],
            env={**shared, "HOSTATLAS_DATA_DIR": str(workdir / name), **(node_env or {}).get(name, {})},
            directory=workdir / name, log_path=workdir / f"{name}.log", port=port))
    for index in range(1, workers + 1):
        name = f"worker-{index}"
        running.workers.append(WorkerProcess(
            name=name, args=["worker"], env={**shared, "HOSTATLAS_DATA_DIR": str(workdir / name)},
            directory=workdir / name, log_path=workdir / f"{name}.log"))
    with ExitStack() as cleanup:
        cleanup.callback(running.stop)
        running.migrate()
        for node in running.nodes:
            node.start(wait=False)
        for worker in running.workers:
            worker.start(wait=False)
        for node in running.nodes:
            node.wait_ready()
        for worker in running.workers:
            worker.wait_started()
        yield running


# ON CLUSTER DDL waits for every server: a shard that is down fails the caller instead of hanging it. A DROP goes
# on in the background once queued, so it need not wait long for a busy DDL queue.
_ON_CLUSTER = {"distributed_ddl_task_timeout": 60}
_DROP_ON_CLUSTER = {"distributed_ddl_task_timeout": 5}


@contextmanager
def database_on_cluster(cluster_url: str, cluster: str, prefix: str) -> Iterator[str]:
    """A fresh database on every server of ``cluster``; yields its URL on the server of ``cluster_url``."""
    from clickhouse_driver import Client  # type: ignore[import-untyped]
    from clickhouse_driver.errors import ErrorCodes, ServerException  # type: ignore[import-untyped]

    database = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = Client.from_url(cluster_url)
    admin.execute(f"CREATE DATABASE {database} ON CLUSTER {cluster}", settings=_ON_CLUSTER)
    try:
        yield cluster_url.rsplit("/", 1)[0] + f"/{database}"
    finally:
        try:
            admin.execute(f"DROP DATABASE IF EXISTS {database} ON CLUSTER {cluster}", settings=_DROP_ON_CLUSTER)
        except ServerException as exc:
            # A busy distributed DDL queue: the servers drop it in the background, as the error says.
            if exc.code != ErrorCodes.TIMEOUT_EXCEEDED:
                raise
        finally:
            admin.disconnect()
