"""What every benchmark needs: a real `hostatlas serve` on loopback against a chosen backend, an API
key for it, and honest latency statistics. Nothing here is imported by the platform."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import psutil
from sqlalchemy import Connection, create_engine, insert, select, text

POSTGRES_URL = os.environ.get("HOSTATLAS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CLICKHOUSE_URL = os.environ.get("HOSTATLAS_BENCH_CLICKHOUSE_URL", "clickhouse://127.0.0.1:9000/default")
# The two-shard cluster (scripts/clickhouse-cluster start): shard 1's server, and the cluster's name.
CLICKHOUSE_CLUSTER_URL = os.environ.get("HOSTATLAS_BENCH_CLICKHOUSE_CLUSTER_URL", "clickhouse://127.0.0.1:9101/default")
CLICKHOUSE_CLUSTER = os.environ.get("HOSTATLAS_BENCH_CLICKHOUSE_CLUSTER", "hostatlas")
# Rate-limit windows in a Redis database of the benches' own, away from the tests' (0).
REDIS_URL = os.environ.get("HOSTATLAS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")


# A webhook receiver in its own process (aiohttp, answering 200 at once); argv[1] is its port.
# GET /count says how many POSTs it has had.
RECEIVER_SCRIPT = textwrap.dedent("""
    import sys
    from aiohttp import web
    count = 0
    async def hook(request):
        global count
        await request.read()
        count += 1
        return web.Response(text="ok")
    async def seen(request):
        return web.Response(text=str(count))
    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", seen)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
""")


@dataclass
class Target:
    backend: str
    base_url: str
    api_key: str
    database_url: str
    workdir: Path
    pid: int  # the `hostatlas serve` process (its children are the `--workers` processes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the bench PostgreSQL database, dropped afterwards; yields its URL."""
    schema = f"hostatlas_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def clickhouse_database(server_url: str = CLICKHOUSE_URL, *, cluster: str | None = None) -> Iterator[str]:
    """A private ClickHouse database for one run (its URL on ``server_url``), dropped afterwards; with
    ``cluster``, on every server of it. Made and dropped server by server, not ON CLUSTER: distributed DDL
    waits in one queue for every server, behind whatever else runs on the cluster."""
    from clickhouse_driver import Client  # type: ignore[import-untyped]

    database = f"hostatlas_bench_{uuid.uuid4().hex[:8]}"
    servers = cluster_servers(server_url, cluster) if cluster else [server_url]
    for url in servers:
        admin = Client.from_url(url)
        try:
            admin.execute(f"CREATE DATABASE {database}")
        finally:
            admin.disconnect()
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{database}"
    finally:
        for url in servers:
            admin = Client.from_url(url)
            try:
                admin.execute(f"DROP DATABASE IF EXISTS {database}")
            finally:
                admin.disconnect()


def cluster_servers(server_url: str, cluster: str) -> list[str]:
    """The URL of every server of ``cluster``, as ``server_url``'s server knows them (system.clusters)."""
    from clickhouse_driver import Client

    admin = Client.from_url(server_url)
    try:
        rows = admin.execute("SELECT host_address, port FROM system.clusters WHERE cluster = %(cluster)s "
                             "ORDER BY shard_num, replica_num", {"cluster": cluster})
    finally:
        admin.disconnect()
    return [f"clickhouse://{host}:{port}/default" for host, port in rows]


def clickhouse_rows(url: str) -> tuple[int, int]:
    """Metric samples and log lines stored in the ClickHouse database at ``url`` (on a cluster: every shard's,
    read through the Distributed tables)."""
    from clickhouse_driver import Client

    client = Client.from_url(url)
    try:
        return (int(client.execute("SELECT count() FROM metrics_raw")[0][0]),
                int(client.execute("SELECT count() FROM logs")[0][0]))
    finally:
        client.disconnect()


@contextlib.contextmanager
def serve(backend: str, *, extra_env: dict[str, str] | None = None,
          serve_args: tuple[str, ...] = ()) -> Iterator[Target]:
    """Run `hostatlas serve` (access log off, warnings only) on a fresh database of the given backend."""
    with tempfile.TemporaryDirectory(prefix="hostatlas-bench-") as workdir, contextlib.ExitStack() as stack:
        database_url = (f"sqlite:///{Path(workdir) / 'hostatlas.db'}" if backend == "sqlite"
                        else stack.enter_context(postgres_schema()))
        env = {**os.environ, "HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_LOG_LEVEL": "WARNING",
               "HOSTATLAS_RATE_LIMIT": "100000000/minute", **(extra_env or {})}
        command = [sys.executable, "-m", "hostatlas"]
        created = subprocess.run([*command, "apikey", "create", "--name", "bench", "--scopes", "*"], cwd=workdir,
                                 env=env, capture_output=True, text=True, check=True)
        key = created.stdout.strip().splitlines()[-1]
        port = free_port()
        log = open(Path(workdir) / "serve.log", "w")  # noqa: SIM115 - closed below
        process = subprocess.Popen([*command, "serve", "--port", str(port), "--no-access-log", *serve_args],
                                   cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            if not wait_until_answers(f"{base}/readyz", timeout=30):
                raise RuntimeError((Path(workdir) / "serve.log").read_text())
            yield Target(backend, base, key, database_url, Path(workdir), process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


def wait_until_answers(url: str, *, timeout: float) -> bool:
    """Poll ``url`` until it answers 200 (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def webhook_receiver() -> Iterator[int]:
    """RECEIVER_SCRIPT running in a process of its own, answering; yields its port."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", RECEIVER_SCRIPT, str(port)])
    try:
        if not wait_until_answers(f"http://127.0.0.1:{port}/count", timeout=10):
            raise RuntimeError("the webhook receiver did not start")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def insert_pending_deliveries(connection: Connection, *, team_id: int, webhook_id: int, count: int,
                              at: datetime, body: Callable[[str], str]) -> None:
    """``count`` pending deliveries due at ``at``, inserted in batches; ``body(delivery_id)`` is each body."""
    from hostatlas.webhooks.models import WebhookDelivery
    from hostatlas.webhooks.service import new_delivery_id

    for start in range(0, count, 5_000):
        rows = []
        for _ in range(min(5_000, count - start)):
            delivery_id = new_delivery_id()
            rows.append({"delivery_id": delivery_id, "team_id": team_id, "webhook_id": webhook_id, "event_id": None,
                         "event": "server.offline", "status": "pending", "attempts": 0, "body": body(delivery_id),
                         "next_attempt_at": at, "created_at": at})
        connection.execute(insert(WebhookDelivery), rows)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(latencies_s: list[float]) -> str:
    ms = [value * 1000 for value in latencies_s]
    return (f"p50 {statistics.median(ms):6.2f} ms  p99 {percentile(ms, 0.99):6.2f} ms  "
            f"max {max(ms):7.2f} ms") if ms else "no samples"


@dataclass
class Run:
    """One load phase: the latencies of the requests that succeeded, the failures, the phase's length."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


# Sends the index-th request of a phase; True when it succeeded.
Request = Callable[[int], Awaitable[bool]]


async def _timed(request: Request, index: int, run: Run, started: float) -> None:
    try:
        succeeded = await request(index)
    except aiohttp.ClientError:
        succeeded = False
    if succeeded:
        run.latencies.append(time.perf_counter() - started)
    else:
        run.errors += 1


async def open_loop(request: Request, rate: float, duration: float) -> Run:
    """``rate`` requests a second for ``duration`` seconds, whether or not earlier ones were answered;
    latency counts from each request's scheduled time (no coordinated omission)."""
    run = Run()
    interval = 1.0 / rate
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for index in range(int(rate * duration)):
        scheduled = start + index * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_timed(request, index, run, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*pending), timeout=60)
    run.elapsed = time.perf_counter() - start
    return run


async def closed_loop(request: Request, concurrency: int, duration: float) -> Run:
    """``concurrency`` connections, each sending its next request once the last is answered."""
    run = Run()
    deadline = time.perf_counter() + duration

    async def loop(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline:
            await _timed(request, index, run, time.perf_counter())
            index += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(loop(offset) for offset in range(concurrency)))
    run.elapsed = time.perf_counter() - start
    return run


def load_arguments(description: str | None, *, count: tuple[str, int, str], rate: float, concurrency: int,
                   connections: int) -> argparse.Namespace:
    """The options every load bench shares; ``count`` is (option, default, help) of what it creates first."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(f"--{count[0]}", type=int, default=count[1], help=count[2])
    parser.add_argument("--rate", type=float, default=rate, help="open-loop requests per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase (bounded to 120)")
    parser.add_argument("--concurrency", type=int, default=concurrency, help="closed-loop connections")
    parser.add_argument("--connections", type=int, default=connections, help="client connection pool size")
    parser.add_argument("--serve-args", default="", help='extra `hostatlas serve` arguments, e.g. "--workers 2"')
    args = parser.parse_args()
    args.duration = min(args.duration, 120.0)
    return args


# What a host's agent sends (bench/ingest.py, bench/soak.py): 30 series a metrics batch, and log lines of a
# realistic mix (nginx access and error, syslog, JSON and plain lines).
METRICS = ["cpu.percent", "load.1", "load.5", "load.15", "mem.used_bytes", "mem.used_percent", "swap.used_percent"]
LABELLED = [("disk.used_percent", "mount", ["/", "/data", "/var"]), ("disk.read_bytes", "device", ["sda", "sdb"]),
            ("disk.write_bytes", "device", ["sda", "sdb"]), ("net.rx_bytes", "iface", ["eth0", "eth1", "lo"]),
            ("net.tx_bytes", "iface", ["eth0", "eth1", "lo"])]
LINES = [
    ("/var/log/nginx/access.log", '10.0.{a}.{b} - - [21/Mar/2026:14:32:01 +0000] "GET /api/v1/items/{n} HTTP/1.1" '
                                  '200 {n} "-" "curl/8.0"'),
    ("/var/log/nginx/access.log", '10.0.{a}.{b} - - [21/Mar/2026:14:32:02 +0000] "POST /login HTTP/1.1" 401 12 '
                                  '"-" "Mozilla/5.0"'),
    ("/var/log/nginx/error.log", "2026/03/21 14:28:41 [error] 812#812: *{n} connect() failed (111: Connection "
                                 "refused) while connecting to upstream, client: 10.0.{a}.{b}, server: app.local"),
    ("/var/log/syslog", "Mar 21 14:32:01 web-prod-01 sshd[{n}]: Accepted publickey for deploy from 10.0.{a}.{b}"),
    ("/var/log/syslog", "Mar 21 14:32:03 web-prod-01 CRON[{n}]: (root) CMD (run-parts /etc/cron.hourly)"),
    ("/var/log/app/app.json", '{{"level": "info", "msg": "request served", "path": "/items/{n}", "ms": {a}}}'),
    ("/var/log/app/plain.log", "WARN cache miss for key item:{n} after {a} ms"),
]


def _series_names() -> list[tuple[str, dict[str, str]]]:
    names: list[tuple[str, dict[str, str]]] = [(metric, {}) for metric in METRICS]
    for metric, label, values in LABELLED:
        names += [(metric, {label: value}) for value in values]
    names += [(f"app.custom_{index}", {}) for index in range(30 - len(names))]
    return names[:30]


SERIES = _series_names()


def metrics_body(now: int, rng: random.Random) -> bytes:
    """One agent's metrics batch: every series of SERIES, one point each at ``now``."""
    # A healthy fleet: no value reaches the default alert rules' thresholds (90-95%), so the rules evaluating
    # meanwhile cost what they cost every 15 s, not a mass of pending series (bench/alerts.py measures that).
    return orjson.dumps({"series": [{"metric": metric, "labels": labels, "points": [[now, rng.uniform(0, 80)]]}
                                    for metric, labels in SERIES]})


def logs_body(count: int, now: float, rng: random.Random) -> bytes:
    entries = []
    for _ in range(count):
        source, template = LINES[rng.randrange(len(LINES))]
        entries.append({"ts": now, "source": source,
                        "line": template.format(a=rng.randrange(256), b=rng.randrange(256), n=rng.randrange(99999))})
    return orjson.dumps({"entries": entries})


@dataclass
class Tally:
    """One endpoint under load: latencies of the requests answered 200 (from their scheduled time), what the
    platform said it accepted (samples, lines), and the failures by status (0: no answer)."""

    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    failures: dict[int, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(self.failures.values())

    def fail(self, status: int) -> None:
        self.failures[status] = self.failures.get(status, 0) + 1


async def post_agent(session: aiohttp.ClientSession, url: str, token: str, body: bytes, tally: Tally,
                     scheduled: float, *, counts: bool = True) -> bool:
    """POST one agent request; with ``counts`` the answer's ``accepted`` is added to the tally."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        async with session.post(url, data=body, headers=headers) as response:
            answer = await response.read()
            if response.status != 200:
                tally.fail(response.status)
                return False
    except (aiohttp.ClientError, TimeoutError):
        tally.fail(0)
        return False
    tally.latencies.append(time.perf_counter() - scheduled)
    if counts:
        tally.accepted += int(orjson.loads(answer)["accepted"])
    return True


async def paced(rate: float, duration: float, make: Callable[[int, float], Coroutine[Any, Any, None]], *,
                drain_timeout: float = 120.0) -> None:
    """Call make(index, scheduled_time) ``rate`` times a second for ``duration`` seconds, open loop (whether or
    not earlier calls finished); then wait, at most ``drain_timeout`` seconds, for those still running."""
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for index in range(int(rate * duration)):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(make(index, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=drain_timeout)


HOST_FACTS = {"ip_address": "10.9.0.1", "os": "Debian 12", "kernel": "6.1.0", "cpu_cores": 2, "ram_total_mb": 2048,
              "agent_version": "1.0.0"}


async def enrol(session: aiohttp.ClientSession, base_urls: list[str], api_key: str, count: int, *,
                prefix: str = "bench", concurrency: int = 16) -> list[str]:
    """Enrol ``count`` hosts through the agent API (host i through node i mod len(base_urls)); their tokens."""
    headers = {"Authorization": f"Bearer {api_key}"}
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> str:
        facts = {"machine_id": f"{prefix}-{index:06d}", "hostname": f"host-{index:06d}", **HOST_FACTS}
        url = f"{base_urls[index % len(base_urls)]}/api/v1/agent/register"
        async with semaphore, session.post(url, json=facts, headers=headers) as response:
            response.raise_for_status()
            return str((await response.json())["agent_token"])

    return list(await asyncio.gather(*(one(index) for index in range(count))))


async def create_heartbeats(session: aiohttp.ClientSession, base_url: str, api_key: str, count: int, *,
                            interval: int = 3600, concurrency: int = 16) -> list[str]:
    """Create ``count`` heartbeats through the REST API; their ping tokens (the last part of their ping URLs)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> str:
        async with semaphore, session.post(f"{base_url}/api/v1/heartbeats", headers=headers,
                                           json={"name": f"job {index:06d}", "interval": interval}) as response:
            response.raise_for_status()
            return str((await response.json())["ping_url"]).rsplit("/", 1)[1]

    return list(await asyncio.gather(*(one(index) for index in range(count))))


class CpuMeter:
    """CPU time used during a phase by groups of processes, each as a share of one core. On two cores it tells
    which one the phase was bound by."""

    def __init__(self, groups: dict[str, list[psutil.Process]]) -> None:
        self.groups = groups
        self.started = 0.0
        self.before: dict[str, float] = {}
        self.shares: dict[str, float] = {}

    @classmethod
    def for_server(cls, server_pid: int) -> CpuMeter:
        """The server's process tree, this client, and PostgreSQL's processes."""
        server = psutil.Process(server_pid)
        return cls({"server": [server, *server.children(recursive=True)], "client": [psutil.Process()],
                    "postgres": [process for process in psutil.process_iter(["name"])
                                 if (process.info["name"] or "").startswith("postgres")]})

    def _seconds(self) -> dict[str, float]:
        totals = {}
        for name, processes in self.groups.items():
            total = 0.0
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
            totals[name] = total
        return totals

    def __enter__(self) -> CpuMeter:
        self.started, self.before = time.monotonic(), self._seconds()
        return self

    def __exit__(self, *_exc: object) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.shares = {name: (after - self.before[name]) / elapsed for name, after in self._seconds().items()}

    def __str__(self) -> str:
        return "cpu (share of one core): " + ", ".join(f"{name} {share:.0%}" for name, share in self.shares.items())


def listening_pids() -> dict[int | None, int]:
    """Port -> pid of every process listening on TCP (the engines' servers)."""
    return {port_of(conn.laddr): conn.pid for conn in psutil.net_connections("tcp")
            if conn.status == psutil.CONN_LISTEN and conn.pid}


def port_of(address: object) -> int | None:
    """The port of a psutil connection's address; None for an unconnected socket's empty one."""
    return getattr(address, "port", None)


def seed_agents(database_url: str, count: int, *, prefix: str = "bench", team: str = "default",
                seen_seconds_ago: float = 0.0) -> list[str]:
    """``count`` enrolled servers written straight into a migrated database, online and last seen
    ``seen_seconds_ago``, each with an agent token; the tokens. What registration stores, minus its event, at
    thousands a second instead of tens: for a bench that measures what agents do once enrolled."""
    from hostatlas import tokens
    from hostatlas.servers.models import AgentToken, Server
    from hostatlas.teams.models import Team

    engine = create_engine(database_url)
    now = datetime.now(UTC)
    seen = now - timedelta(seconds=seen_seconds_ago)
    raw = [tokens.generate(tokens.AGENT_TOKEN_PREFIX) for _ in range(count)]
    try:
        with engine.begin() as connection:
            team_id = connection.execute(select(Team.id).where(Team.slug == team)).scalar_one()
            for start in range(0, count, 5_000):
                machines = [f"{prefix}-{index:06d}" for index in range(start, min(count, start + 5_000))]
                connection.execute(insert(Server), [
                    {"team_id": team_id, "machine_id": machine, "hostname": f"host-{machine}", "status": "online",
                     "last_seen_at": seen, "tags": [], "created_at": now, **HOST_FACTS} for machine in machines])
                rows = connection.execute(select(Server.machine_id, Server.id).where(
                    Server.team_id == team_id, Server.machine_id.in_(machines)))
                ids = {machine: server_id for machine, server_id in rows}
                connection.execute(insert(AgentToken), [
                    {"server_id": ids[machine], "team_id": team_id, "token_hash": tokens.hash_token(token),
                     "created_at": now} for machine, token in zip(machines, raw[start:], strict=False)])
    finally:
        engine.dispose()
    return raw
