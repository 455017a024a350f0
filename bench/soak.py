"""A fleet of simulated agents against several API nodes for minutes: errors, latency per endpoint, the memory
of every process over time, and how long after the load everything acknowledged was stored.

    uv run python bench/soak.py                                  # 10,000 agents, 2 nodes, 1 worker, 10 minutes
    uv run python bench/soak.py --duration 90 --sample-every 15 --warmup 30      # a trial run

The deployment is tests/topology.py's: `hostatlas serve --no-worker` nodes and `hostatlas worker`s sharing a
fresh PostgreSQL schema, Redis (a database number of its own; --no-redis: none, each node limits alone) and a
fresh database on the two-shard ClickHouse cluster (`scripts/clickhouse-cluster start`; --clickhouse single:
the one server of `scripts/clickhouse start`). The agents are enrolled straight into the database before the
nodes start. Each sends on the agent's own schedule, phases spread evenly, open loop (latency counts from each
request's scheduled time, so a platform that falls behind shows it):
  * a check-in every 60 s, a metrics batch every 15 s (30 series, one point each), a log batch every 60 s
    (20 lines of a realistic mix); agent i talks to node i mod --nodes, as behind a sticky load balancer;
  * --heartbeat-share of the agents also run a cron job pinging its heartbeat every 60 s.
At 10,000 agents that is 167 check-ins, 667 metric batches (20,000 samples), 167 log batches (3,333 lines) and
17 pings a second. The RSS and CPU time of every process (API nodes, their storer processes, the worker, the
ClickHouse servers, the PostgreSQL backends serving the platform, Redis, this load generator) are sampled every
--sample-every seconds. At the end it waits until everything acknowledged is stored and counts it: samples and
log lines in ClickHouse, pings in PostgreSQL, and every agent's last_seen_at no older than its last
acknowledged check-in. Verdict (exit status 1 otherwise): no errors, everything acknowledged stored exactly
once, and no platform process grown more than --rss-bound-mib after the warm-up. tests/test_soak.py runs the
same code with 1,500 agents for 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import psutil
import uvloop
from sqlalchemy import create_engine, text

from hostatlas.db import migrate
from hostatlas.db.engine import Database
from hostatlas.teams import service as teams
from hostatlas.teams.models import DEFAULT_TEAM_SLUG

from _harness import (
    CLICKHOUSE_CLUSTER,
    CLICKHOUSE_CLUSTER_URL,
    CLICKHOUSE_URL,
    REDIS_URL,
    Tally,
    clickhouse_database,
    clickhouse_rows,
    cluster_servers,
    create_heartbeats,
    listening_pids,
    logs_body,
    metrics_body,
    paced,
    percentile,
    port_of,
    post_agent,
    postgres_schema,
    seed_agents,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.topology

from tests.support import issue_key  # noqa: E402 - after the path is set
from tests.topology import Topology, topology  # noqa: E402

ENDPOINTS = ("check-in", "metrics", "logs", "ping")
# Sends the index-th request of an endpoint's stream, scheduled at the given perf_counter time.
Sender = Callable[[int, float], Coroutine[Any, Any, None]]
MIB = 1 << 20


def _progress(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    agents: int = 10_000
    duration: float = 600.0
    checkin_every: float = 60.0
    metrics_every: float = 15.0
    logs_every: float = 60.0
    log_lines: int = 20
    heartbeat_share: float = 0.1
    ping_every: float = 60.0
    sample_every: float = 60.0
    warmup: float = 120.0
    # Each real agent has a connection of its own: a small shared pool would queue one endpoint's requests
    # behind another's slow ones (head-of-line blocking no fleet has), and call it the platform's latency.
    connections: int = 2000
    # A platform process (node, storer, worker) may grow this much after the warm-up, no more.
    rss_bound_mib: float = 48.0
    store_timeout: float = 180.0

    @property
    def heartbeats(self) -> int:
        return round(self.agents * self.heartbeat_share)

    def rate(self, endpoint: str) -> float:
        """Requests a second the whole fleet sends to ``endpoint``."""
        senders, every = {"check-in": (self.agents, self.checkin_every), "metrics": (self.agents, self.metrics_every),
                          "logs": (self.agents, self.logs_every), "ping": (self.heartbeats, self.ping_every)}[endpoint]
        return senders / every


@dataclass
class Deployment:
    node_urls: list[str]
    api_key: str
    agent_tokens: list[str]  # the enrolled agents'
    database_url: str
    clickhouse_url: str  # what the nodes store through (Distributed tables on a cluster)
    clickhouse_servers: list[str]  # every server, to count each shard's rows and to find their processes
    clustered: bool
    redis_url: str | None
    platform: Callable[[], dict[str, int]]  # label -> pid of every platform process, read at each sample

    def service_ports(self) -> dict[str, int]:
        """The engines' servers whose memory the soak samples too (shared with whatever else runs)."""
        ports = {f"clickhouse :{urlsplit(url).port}": urlsplit(url).port or 9000 for url in self.clickhouse_servers}
        if self.redis_url:
            ports["redis"] = urlsplit(self.redis_url).port or 6379
        return ports


@dataclass
class Stored:
    what: str
    acknowledged: int
    stored: int
    lag_s: float | None  # seconds after the load until all of it was stored; None: it never was
    detail: str = ""


@dataclass
class SoakReport:
    plan: Plan
    nodes: int
    windows: dict[str, list[Tally]]  # per endpoint, one tally per sampling window
    elapsed: float
    setup_s: float
    rss: list[RssSample] = field(default_factory=list)
    stored: list[Stored] = field(default_factory=list)

    def tally(self, endpoint: str) -> Tally:
        merged = Tally()
        for window in self.windows[endpoint]:
            merged.latencies += window.latencies
            merged.accepted += window.accepted
            for status, count in window.failures.items():
                merged.failures[status] = merged.failures.get(status, 0) + count
        return merged

    def rss_growth(self) -> dict[str, float]:
        """MiB each process grew from the end of the warm-up to its largest sample after it."""
        settled = [sample for sample in self.rss if sample.at >= self.plan.warmup]
        if len(settled) < 2:
            return {}
        base = settled[0].rss
        return {label: (max(sample.rss.get(label, 0) for sample in settled) - bytes_) / MIB
                for label, bytes_ in base.items()}

    def cpu_shares(self) -> dict[str, float]:
        """CPU each process used from the first sample to the last, as a share of one core."""
        if len(self.rss) < 2 or self.rss[-1].at <= self.rss[0].at:
            return {}
        first, last = self.rss[0], self.rss[-1]
        return {label: (seconds - first.cpu[label]) / (last.at - first.at)
                for label, seconds in last.cpu.items() if label in first.cpu}

    def problems(self) -> list[str]:
        """Everything that breaks the soak's promises; empty when it held."""
        found = [f"{endpoint}: {self.tally(endpoint).errors} errors {self.tally(endpoint).failures}"
                 for endpoint in ENDPOINTS if self.tally(endpoint).errors]
        # More stored than acknowledged, after client-side timeouts, is the platform finishing what the client
        # gave up on: reported with the errors, as is anything stored twice.
        found += [f"{stored.what}: {stored.stored} stored of {stored.acknowledged} acknowledged"
                  for stored in self.stored if stored.stored != stored.acknowledged]
        if len([sample for sample in self.rss if sample.at >= self.plan.warmup]) < 2:
            found.append("too few RSS samples after the warm-up to tell growth")
        found += [f"{label} grew {growth:.0f} MiB after the warm-up (bound {self.plan.rss_bound_mib:.0f})"
                  for label, growth in self.rss_growth().items()
                  if label.startswith(("node", "worker")) and growth > self.plan.rss_bound_mib]
        return found


@dataclass
class RssSample:
    at: float  # seconds since the load started
    rss: dict[str, int]  # process label -> bytes
    cpu: dict[str, float]  # process label -> CPU seconds used since it started


class Meter:
    """The memory and CPU time of a deployment's processes: the platform's (label -> pid from ``platform``, read
    at each sample; each process's children are counted as ``<label> child``, e.g. a node's storer), the servers
    listening on ``service_ports`` (label -> port: ClickHouse, Redis), this load generator, and the PostgreSQL
    backends connected to the platform. A backend's RSS counts the shared buffers it has touched, which grows
    with no leak: for them the private part (RSS less shared pages) is summed."""

    def __init__(self, platform: Callable[[], dict[str, int]], service_ports: dict[str, int],
                 postgres_port: int = 5432) -> None:
        self.platform, self.postgres_port = platform, postgres_port
        listening = listening_pids()
        self.services = {label: listening[port] for label, port in service_ports.items() if port in listening}

    def _processes(self) -> dict[str, list[psutil.Process]]:
        found: dict[str, list[psutil.Process]] = {}
        for label, pid in self.platform().items():
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                found[label] = [process]
                children = process.children(recursive=True)
                if children:
                    found[f"{label} child"] = children
        for label, pid in self.services.items():
            with contextlib.suppress(psutil.Error):
                found[label] = [psutil.Process(pid)]
        found["load generator"] = [psutil.Process()]
        return found

    def _postgres_backends(self, platform_pids: set[int]) -> list[psutil.Process]:
        connections = psutil.net_connections("tcp")
        client_ports = {port_of(conn.laddr) for conn in connections
                        if conn.pid in platform_pids and port_of(conn.raddr) == self.postgres_port}
        backends = []
        for conn in connections:
            if conn.pid and port_of(conn.laddr) == self.postgres_port and port_of(conn.raddr) in client_ports:
                with contextlib.suppress(psutil.Error):  # a connection closed since the listing
                    backends.append(psutil.Process(conn.pid))
        return backends

    def sample(self, at: float) -> RssSample:
        rss: dict[str, int] = {}
        cpu: dict[str, float] = {}
        processes = self._processes()
        for label, group in processes.items():
            rss[label], cpu[label] = 0, 0.0
            for process in group:
                with contextlib.suppress(psutil.Error):
                    rss[label] += process.memory_info().rss
                    times = process.cpu_times()
                    cpu[label] += times.user + times.system
        platform_pids = {process.pid for label, group in processes.items()
                         if label not in self.services and label != "load generator" for process in group}
        private = 0
        for backend in self._postgres_backends(platform_pids):
            with contextlib.suppress(psutil.Error):
                memory = backend.memory_info()
                private += memory.rss - memory.shared
        rss["postgres backends (private)"] = private
        return RssSample(at, rss, cpu)


@dataclass
class Fleet:
    tokens: list[str]
    ping_urls: list[str]
    # Per agent: the wall-clock time its last acknowledged check-in was sent (0: none yet).
    checked_in: list[float]


async def _prepare(session: aiohttp.ClientSession, deployment: Deployment, plan: Plan) -> Fleet:
    nodes = deployment.node_urls
    pings = await create_heartbeats(session, nodes[0], deployment.api_key, plan.heartbeats,
                                    interval=int(plan.ping_every), concurrency=32)
    ping_urls = [f"{nodes[index % len(nodes)]}/heartbeat/{token}" for index, token in enumerate(pings)]
    return Fleet(deployment.agent_tokens[:plan.agents], ping_urls, [0.0] * plan.agents)


async def _get(session: aiohttp.ClientSession, url: str, tally: Tally, scheduled: float) -> None:
    try:
        async with session.get(url) as response:
            await response.read()
            if response.status != 200:
                tally.fail(response.status)
                return
    except (aiohttp.ClientError, TimeoutError):
        tally.fail(0)
        return
    tally.latencies.append(time.perf_counter() - scheduled)
    tally.accepted += 1


def _streams(session: aiohttp.ClientSession, deployment: Deployment, fleet: Fleet, plan: Plan,
             report: SoakReport, start: float) -> list[tuple[str, Sender]]:
    """Each endpoint's sender: call i goes to agent (or heartbeat) i mod their number, so each sends every
    interval, the phases spread evenly over it."""
    nodes, rng = deployment.node_urls, random.Random(16)

    def window(endpoint: str, scheduled: float) -> Tally:
        tallies = report.windows[endpoint]
        return tallies[min(len(tallies) - 1, int((scheduled - start) / plan.sample_every))]

    async def check_in(index: int, scheduled: float) -> None:
        agent = index % plan.agents
        body = orjson.dumps({"agent_version": "1.0.0", "uptime_s": 86_400 + index, "boot_id": "soak"})
        sent = time.time()
        if await post_agent(session, f"{nodes[agent % len(nodes)]}/api/v1/agent/check-in", fleet.tokens[agent],
                            body, window("check-in", scheduled), scheduled, counts=False):
            fleet.checked_in[agent] = sent

    async def metrics(index: int, scheduled: float) -> None:
        agent = index % plan.agents
        await post_agent(session, f"{nodes[agent % len(nodes)]}/api/v1/agent/metrics", fleet.tokens[agent],
                         metrics_body(int(time.time()), rng), window("metrics", scheduled), scheduled)

    async def logs(index: int, scheduled: float) -> None:
        agent = index % plan.agents
        await post_agent(session, f"{nodes[agent % len(nodes)]}/api/v1/agent/logs", fleet.tokens[agent],
                         logs_body(plan.log_lines, time.time(), rng), window("logs", scheduled), scheduled)

    async def ping(index: int, scheduled: float) -> None:
        await _get(session, fleet.ping_urls[index % len(fleet.ping_urls)], window("ping", scheduled), scheduled)

    senders = {"check-in": check_in, "metrics": metrics, "logs": logs, "ping": ping}
    return [(endpoint, senders[endpoint]) for endpoint in ENDPOINTS if plan.rate(endpoint) > 0]


async def _sample_until(done: asyncio.Event, meter: Meter, report: SoakReport, start: float, every: float) -> None:
    """A sample every ``every`` seconds from the start, and a last one when the load is over."""
    while True:
        # In a thread: finding the PostgreSQL backends reads every socket of the machine.
        report.rss.append(await asyncio.to_thread(meter.sample, time.perf_counter() - start))
        if done.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=every - (time.perf_counter() - start) % every)


async def _load(deployment: Deployment, plan: Plan, meter: Meter) -> tuple[SoakReport, Fleet]:
    windows = max(1, int(plan.duration / plan.sample_every + 0.999))
    # Idle connections are let go before uvicorn's 5 s keep-alive ends: reusing one the node is closing at that
    # moment fails the request (aiohttp's default keeps them 15 s). One such request failed a CI run of the test.
    connector = aiohttp.TCPConnector(limit=plan.connections, keepalive_timeout=2.0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        began = time.perf_counter()
        fleet = await _prepare(session, deployment, plan)
        report = SoakReport(plan, len(deployment.node_urls), {endpoint: [Tally() for _ in range(windows)]
                                                             for endpoint in ENDPOINTS}, 0.0,
                            time.perf_counter() - began)
        _progress(f"{plan.heartbeats} heartbeats created in {report.setup_s:.0f} s; load starts")
        # What setup allocated stays out of the collector's way: a full collection then costs the load little.
        gc.collect()
        gc.freeze()
        start, done = time.perf_counter(), asyncio.Event()
        sampler = asyncio.create_task(_sample_until(done, meter, report, start, plan.sample_every))
        await asyncio.gather(*(paced(plan.rate(endpoint), plan.duration, send, drain_timeout=60)
                               for endpoint, send in _streams(session, deployment, fleet, plan, report, start)))
        report.elapsed = time.perf_counter() - start
        done.set()
        await sampler
        gc.unfreeze()
    return report, fleet


def _shard_rows(deployment: Deployment) -> str:
    """How the samples spread over the shards (each server's local table)."""
    from clickhouse_driver import Client  # type: ignore[import-untyped]

    if not deployment.clustered:
        return ""
    database = deployment.clickhouse_url.rsplit("/", 1)[1]
    counts = []
    for url in deployment.clickhouse_servers:
        client = Client.from_url(url.rsplit("/", 1)[0] + f"/{database}")
        try:
            counts.append(int(client.execute("SELECT count() FROM metrics_raw_local")[0][0]))
        finally:
            client.disconnect()
    return "per shard " + " / ".join(f"{count:,}" for count in counts)


def _postgres_counts(database_url: str, fleet: Fleet) -> tuple[int, int]:
    """Pings in the log, and agents whose last_seen_at is no older than their last acknowledged check-in."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            pings = int(connection.execute(text("SELECT count(*) FROM heartbeat_pings")).scalar_one())
            rows = connection.execute(text("SELECT machine_id, last_seen_at FROM servers"))
            seen: dict[str, datetime] = {machine: at for machine, at in rows}
    finally:
        engine.dispose()
    fresh = 0
    for agent, sent in enumerate(fleet.checked_in):
        at = seen.get(f"soak-{agent:06d}")
        # Stored as naive UTC. It is the platform's receipt time: a second of slack covers the clocks' rounding.
        fresh += bool(sent) and at is not None and at.replace(tzinfo=UTC).timestamp() >= sent - 1
    return pings, fresh


def wait_until_stored(deployment: Deployment, report: SoakReport, fleet: Fleet) -> list[Stored]:
    """Poll the stores until they hold everything acknowledged (at most plan.store_timeout seconds), then count
    once more: equal is stored exactly once."""
    acknowledged = {"metric samples": report.tally("metrics").accepted, "log lines": report.tally("logs").accepted,
                    "pings": report.tally("ping").accepted,
                    "agents checked in": sum(1 for sent in fleet.checked_in if sent)}
    lags: dict[str, float] = {}
    ended = time.monotonic()
    counts: dict[str, int] = {}
    while time.monotonic() - ended < report.plan.store_timeout:
        counts = dict(zip(acknowledged, (*clickhouse_rows(deployment.clickhouse_url),
                                         *_postgres_counts(deployment.database_url, fleet)), strict=True))
        for what, count in counts.items():
            if count >= acknowledged[what]:
                lags.setdefault(what, time.monotonic() - ended)
        if len(lags) == len(acknowledged):
            break
        time.sleep(0.25)
    time.sleep(1.0)  # anything stored twice would show by now
    counts = dict(zip(acknowledged, (*clickhouse_rows(deployment.clickhouse_url),
                                     *_postgres_counts(deployment.database_url, fleet)), strict=True))
    return [Stored(what, acknowledged[what], counts[what], lags.get(what),
                   _shard_rows(deployment) if what == "metric samples" else "") for what in acknowledged]


def run(deployment: Deployment, plan: Plan) -> SoakReport:
    meter = Meter(deployment.platform, deployment.service_ports())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        report, fleet = runner.run(_load(deployment, plan, meter))
    _progress("load over; waiting until everything acknowledged is stored")
    report.stored = wait_until_stored(deployment, report, fleet)
    _progress("counted")
    return report


def _platform_pids(running: Topology) -> dict[str, int]:
    return {process.name: process.pid for process in [*running.nodes, *running.workers] if process.running}


def _issue_api_key(db: Database) -> str:
    """A key with every scope for the default team (the soak creates its heartbeats with it)."""
    with db.session(write=False) as session:
        team_id = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG).id
    return issue_key(db, team_id, ["*"], name="soak")


@contextlib.contextmanager
def deployed(workdir: Path, *, agents: int, database_url: str, clickhouse_url: str, clickhouse_servers: list[str],
             cluster: str | None, redis_url: str | None, nodes: int = 2, workers: int = 1) -> Iterator[Deployment]:
    """tests/topology.py's deployment on the given engines, with an API key and ``agents`` enrolled servers."""
    # Log level stays INFO: the topology knows a worker has started from its worker_started line.
    env = {"HOSTATLAS_RATE_LIMIT": "100000000/minute", "HOSTATLAS_LOCAL_AGENT": "false"}
    began = time.monotonic()
    db = Database(database_url)
    try:
        migrate.upgrade(db)
        api_key = _issue_api_key(db)
    finally:
        db.dispose()
    # Enrolled before the nodes start, so each knows every token from its startup on, as a node does in
    # production (a token enrolled through another node since is looked up once, at its first request). Seen a
    # minute ago (online: offline_after is 5 minutes), so a check-in that never reached the database shows as
    # a last_seen_at older than the check-in.
    agent_tokens = seed_agents(database_url, agents, prefix="soak", seen_seconds_ago=60)
    _progress(f"database migrated, {agents} agents enrolled in {time.monotonic() - began:.0f} s")
    with topology(workdir, database_url=database_url, redis_url=redis_url, clickhouse_url=clickhouse_url,
                  clickhouse_cluster=cluster, nodes=nodes, workers=workers, env=env) as running:
        _progress(f"{nodes} nodes and {workers} workers started; {time.monotonic() - began:.0f} s since the start")
        yield Deployment([node.url for node in running.nodes], api_key, agent_tokens, database_url, clickhouse_url,
                         clickhouse_servers, cluster is not None, redis_url, lambda: _platform_pids(running))


def lines(report: SoakReport) -> list[str]:
    plan = report.plan
    out = [f"soak: {plan.agents} agents, {report.nodes} API nodes, {plan.duration:.0f} s; check-in every "
           f"{plan.checkin_every:.0f} s, metrics every {plan.metrics_every:.0f} s (30 series), {plan.log_lines} log "
           f"lines every {plan.logs_every:.0f} s, {plan.heartbeats} heartbeats pinged every {plan.ping_every:.0f} s "
           f"(heartbeats created in {report.setup_s:.0f} s)",
           f"  {'endpoint':9s} {'requests':>9s} {'req/s':>7s} {'errors':>6s} {'p50 ms':>8s} {'p99 ms':>8s} "
           f"{'max ms':>8s}  p99 per {plan.sample_every:.0f} s window (ms)"]
    for endpoint in ENDPOINTS:
        tally = report.tally(endpoint)
        ms = sorted(value * 1000 for value in tally.latencies)
        windows = " ".join(f"{percentile([v * 1000 for v in w.latencies], 0.99):.0f}"
                           for w in report.windows[endpoint])
        out.append(f"  {endpoint:9s} {len(ms):9d} {len(ms) / report.elapsed:7.0f} {tally.errors:6d} "
                   f"{percentile(ms, 0.5):8.1f} {percentile(ms, 0.99):8.1f} {(ms[-1] if ms else 0):8.1f}  {windows}")
    out.append(f"  RSS (MiB) at {', '.join(f'{sample.at:.0f}' for sample in report.rss)} s; growth after the "
               f"{plan.warmup:.0f} s warm-up; CPU over the load (share of one core)")
    growth, cpu = report.rss_growth(), report.cpu_shares()
    for label in report.rss[0].rss if report.rss else []:
        values = " ".join(f"{sample.rss.get(label, 0) / MIB:6.0f}" for sample in report.rss)
        share = f"{cpu[label]:5.0%}" if label in cpu else "    -"
        out.append(f"    {label:28s} {values}   {growth.get(label, float('nan')):+6.1f}  {share}")
    for stored in report.stored:
        lag = f"{stored.lag_s:.1f} s after the load" if stored.lag_s is not None else "NEVER all"
        out.append(f"  stored {stored.what}: {stored.stored:,} of {stored.acknowledged:,} acknowledged, {lag}"
                   f"{'; ' + stored.detail if stored.detail else ''}")
    problems = report.problems()
    out.append("  verdict: OK" if not problems else "  verdict: FAILED\n    " + "\n    ".join(problems))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (bounded to 3,600)")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--heartbeat-share", type=float, default=0.1, help="agents that also ping a heartbeat")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds before RSS must stay flat")
    parser.add_argument("--rss-bound-mib", type=float, default=48.0, help="growth allowed after the warm-up")
    parser.add_argument("--connections", type=int, default=2000, help="client connection pool size")
    parser.add_argument("--clickhouse", choices=("cluster", "single"), default="cluster")
    parser.add_argument("--no-redis", action="store_true", help="rate limits in each node's memory, not shared")
    args = parser.parse_args()
    plan = Plan(agents=max(1, min(args.agents, 100_000)), duration=min(args.duration, 3600.0),
                heartbeat_share=args.heartbeat_share, sample_every=args.sample_every, warmup=args.warmup,
                rss_bound_mib=args.rss_bound_mib, connections=args.connections)
    cluster = CLICKHOUSE_CLUSTER if args.clickhouse == "cluster" else None
    server_url = CLICKHOUSE_CLUSTER_URL if cluster else CLICKHOUSE_URL
    servers = cluster_servers(server_url, cluster) if cluster else [server_url]
    with tempfile.TemporaryDirectory(prefix="hostatlas-soak-") as workdir, postgres_schema() as database_url, \
            clickhouse_database(server_url, cluster=cluster) as clickhouse_url, \
            deployed(Path(workdir), agents=plan.agents, database_url=database_url, clickhouse_url=clickhouse_url,
                     clickhouse_servers=servers, cluster=cluster, redis_url=None if args.no_redis else REDIS_URL,
                     nodes=args.nodes, workers=args.workers) as deployment:
        report = run(deployment, plan)
    print("\n".join(lines(report)))
    sys.exit(1 if report.problems() else 0)


if __name__ == "__main__":
    main()
