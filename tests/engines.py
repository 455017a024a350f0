"""Engines of a test's own, for the fault tests: a PostgreSQL, a Redis and a two-shard ClickHouse cluster that a
test may stop and start while other test files keep using the shared ones (5432, 6379, 9000, 9101/9102).

Each is a context manager that records the pids it started, yields a handle with ``stop()`` / ``start()``, and
stops everything and removes its files on the way out, whatever happened in between.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from tests.support import free_port

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO / "scripts" / "clickhouse-cluster"
START_TIMEOUT_S = 60.0


class EngineMissing(RuntimeError):
    """The engine's binaries are not installed here: the caller skips (or fails under CI)."""


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for(ready: object, what: str, process: subprocess.Popen[bytes] | None, log: Path) -> None:
    """Poll ``ready()`` for up to START_TIMEOUT_S; fail with the log's tail if it never is or the process dies."""
    assert callable(ready)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start:\n{tail}")
        time.sleep(0.1)


def _stop_process(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# -- PostgreSQL --

def _postgres_bin_dir() -> Path:
    """Debian keeps each major version's binaries apart; take the newest. Elsewhere, whatever is on PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if versions:
        return versions[-1].parent
    found = shutil.which("postgres")
    if found and shutil.which("initdb"):
        return Path(found).parent
    raise EngineMissing("no PostgreSQL server binaries (initdb, postgres)")


def _as_postgres_user() -> dict[str, object]:
    """PostgreSQL refuses to run as root; the tests do run as root in CI containers, so drop to `postgres`."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres"}


@dataclass
class PrivatePostgres:
    bin_dir: Path
    home: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    def answers(self) -> bool:
        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                 connect_timeout=2) as connection:
                connection.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.home / "data"), "-p", str(self.port),
                 "-k", str(self.home), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "max_connections=200", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_as_postgres_user())  # type: ignore[call-overload]
        self.pids.append(self.process.pid)
        _wait_for(self.answers, "PostgreSQL", self.process, self.log)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): open transactions are rolled back and every client is disconnected."""
        _stop_process(self.process, signal.SIGINT)
        self.process = None


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = _postgres_bin_dir()
    # Under /tmp rather than pytest's tmp_path: that one is private to root, and the server runs as `postgres`.
    home = Path(tempfile.mkdtemp(prefix="hostatlas-pg-"))
    engine = PrivatePostgres(bin_dir, home, free_port())
    try:
        if os.geteuid() == 0:
            shutil.chown(home, "postgres", "postgres")
        subprocess.run([str(bin_dir / "initdb"), "-D", str(home / "data"), "--auth=trust", "--username=postgres",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True,
                       **_as_postgres_user())  # type: ignore[call-overload]
        engine.start()
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(home, ignore_errors=True)


# -- Redis --

@dataclass
class PrivateRedis:
    home: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise EngineMissing("no redis-server binary")
        with (self.home / "redis.log").open("ab") as log:
            # Nothing persisted: a restart comes back empty, as a Redis that lost its memory would.
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.home)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pids.append(self.process.pid)
        _wait_for(self.answers, "Redis", self.process, self.home / "redis.log")

    def stop(self) -> None:
        _stop_process(self.process)
        self.process = None


@contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    home = workdir / "redis"
    home.mkdir(parents=True, exist_ok=True)
    engine = PrivateRedis(home, free_port())
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


# -- ClickHouse cluster (scripts/clickhouse-cluster: ZooKeeper and two ClickHouse servers, one shard each) --

def _cluster_ports_free(base: int, zookeeper: int) -> bool:
    wanted = [base + 1, base + 2, base - 900 + 1, base - 900 + 2, base + 201, base + 202, zookeeper]
    return all(_port_is_free(port) for port in wanted)


def pick_cluster_ports() -> tuple[int, int]:
    """A port base whose six derived ports (see scripts/clickhouse-cluster) and a ZooKeeper port are all free."""
    for _ in range(50):
        base = random.randrange(21000, 30000, 10)
        zookeeper = base + 300
        if _cluster_ports_free(base, zookeeper):
            return base, zookeeper
    raise RuntimeError("no free ports for a private ClickHouse cluster")


@dataclass
class PrivateClickHouseCluster:
    home: Path
    port_base: int
    zookeeper_port: int
    name: str = "hostatlas"

    @property
    def ports(self) -> tuple[int, int]:
        return self.port_base + 1, self.port_base + 2

    def url(self, database: str) -> str:
        return f"clickhouse://127.0.0.1:{self.ports[0]}/{database}"

    def pids(self) -> dict[str, int]:
        files = {"zookeeper": self.home / "zookeeper" / "zookeeper.pid",
                 "shard1": self.home / "shard1" / "clickhouse.pid", "shard2": self.home / "shard2" / "clickhouse.pid"}
        return {name: int(path.read_text()) for name, path in files.items() if path.exists()}

    def _script(self, *args: str, timeout: float = 180) -> str:
        env = {**os.environ, "CLICKHOUSE_CLUSTER_DIR": str(self.home),
               "CLICKHOUSE_CLUSTER_PORT_BASE": str(self.port_base),
               "CLICKHOUSE_CLUSTER_ZK_PORT": str(self.zookeeper_port)}
        done = subprocess.run([str(CLUSTER_SCRIPT), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"clickhouse-cluster {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self) -> None:
        """Start whatever is stopped (ZooKeeper, either server) and wait until ON CLUSTER DDL works."""
        self._script("start")

    def stop_clickhouse(self) -> None:
        """Both ClickHouse servers stop (SIGTERM, waited for); ZooKeeper stays up, as it would in production."""
        self._script("stop-clickhouse")

    def stop(self) -> None:
        self._script("stop")


@contextmanager
def private_clickhouse_cluster(workdir: Path) -> Iterator[PrivateClickHouseCluster]:
    if shutil.which("clickhouse-server") is None or not CLUSTER_SCRIPT.exists():
        raise EngineMissing("no clickhouse-server binary or scripts/clickhouse-cluster")
    base, zookeeper = pick_cluster_ports()
    engine = PrivateClickHouseCluster(workdir / "clickhouse-cluster", base, zookeeper)
    try:
        engine.start()
        yield engine
    finally:
        try:
            engine.stop()
        finally:
            # The script's stop only touches pids whose command line names this cluster's config: belt and
            # braces for a start that failed half-way.
            for pid in engine.pids().values():
                _kill_if_ours(pid, str(engine.home))


def _kill_if_ours(pid: int, marker: str) -> None:
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return
    if marker in command_line:
        os.kill(pid, signal.SIGKILL)
