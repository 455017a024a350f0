"""Telemetry ingestion throughput and latency of a real `hostatlas serve`, per telemetry backend.

    uv run python bench/ingest.py                                    # embedded store, then ClickHouse
    uv run python bench/ingest.py --backends clickhouse --hosts 10000 --log-rate 50000 --duration 30

For each backend: start `hostatlas serve` on a fresh SQLite main database and a fresh telemetry store
(the embedded SQLite file, or a new ClickHouse database when --backends names clickhouse), enrol --hosts
agents, then for --duration seconds, open loop (latency measured from each request's scheduled time):
  * every host sends one metrics batch every 15 s: 30 series, one point each (hosts/15 requests/s);
  * log lines arrive at --log-rate lines/s in batches of --log-batch lines (a realistic mix: nginx access
    and error, syslog, JSON and plain lines).
It prints the sustained samples/s and log lines/s the platform acknowledged, with p50/p99 per kind, and
for ClickHouse also direct inserts of the same rows through the same store class (3,000-row metric and
1,000-line log INSERTs), measured in the same run, as the ceiling. Targets (issue 4, this 2-core machine):
ClickHouse 10,000 hosts (20,000 samples/s in 667 requests/s) with p99 < 100 ms and 50,000 log lines/s;
embedded 2,000 hosts and 8,000 log lines/s. Set HOSTATLAS_BENCH_CLICKHOUSE_URL if not the default.

    uv run python bench/ingest.py --compare-cluster --runs 3 --duration 20

--compare-cluster (issue 16) measures, in one sitting, the most the platform ingests through two API nodes
into the two-shard ClickHouse cluster (`scripts/clickhouse-cluster start`) against one node into one shard
(a plain database on the cluster's first server): both deployments (tests/topology.py, PostgreSQL, Redis,
--hosts enrolled each, no worker) run side by side, idle but for the one measured; each run sends metrics
batches, then 500-line log batches, closed loop over --concurrency connections for --duration seconds each,
agents spread over the nodes, and waits until the store holds all of it. Runs alternate between the sides;
it prints each run (with the CPU each group of processes used, as a share of one core), the medians of the
rows stored a second (acknowledged rows over the time until all were stored), and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import psutil

from _harness import (
    CLICKHOUSE_CLUSTER,
    CLICKHOUSE_CLUSTER_URL,
    CLICKHOUSE_URL,
    REDIS_URL,
    SERIES,
    CpuMeter,
    Tally,
    Target,
    clickhouse_database,
    clickhouse_rows,
    closed_loop,
    cluster_servers,
    enrol,
    listening_pids,
    logs_body,
    metrics_body,
    paced,
    percentile,
    post_agent,
    postgres_schema,
    seed_agents,
    serve,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.topology

from tests.topology import topology  # noqa: E402 - after the path is set


async def _add_rules(session: aiohttp.ClientSession, target: Target, count: int) -> None:
    """Alert rules over every server, on the series the load sends, so that ingestion is measured while the
    worker (in the served process) evaluates them every 15 s (issue 13). A fresh install also has its three
    default rules."""
    for index in range(count):
        metric = SERIES[index % len(SERIES)][0]
        rule = {"name": f"bench rule {index}", "metric": metric, "operator": ">=", "threshold": 1e12,
                "window_s": 300, "for_s": 60, "aggregation": ["avg", "max", "last"][index % 3]}
        async with session.post(f"{target.base_url}/api/v1/alert-rules", json=rule,
                                headers={"Authorization": f"Bearer {target.api_key}"}) as response:
            response.raise_for_status()


async def _load(target: Target, args: argparse.Namespace) -> tuple[Tally, Tally, float]:
    rng = random.Random(1)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:
        tokens = await enrol(session, [target.base_url], target.api_key, args.hosts, prefix="ingest", concurrency=32)
        await _add_rules(session, target, args.rules)
        metrics_url, logs_url = f"{target.base_url}/api/v1/agent/metrics", f"{target.base_url}/api/v1/agent/logs"
        metrics, logs = Tally(), Tally()
        metric_rate, log_rate = args.hosts / 15.0, args.log_rate / args.log_batch
        # Bodies are built before the clock starts, so the generator spends its time sending.
        now = int(time.time())
        metric_bodies = [metrics_body(now, rng) for _ in range(64)]
        log_bodies = [logs_body(args.log_batch, now, rng) for _ in range(16)]

        async def send_metrics(index: int, scheduled: float) -> None:
            await post_agent(session, metrics_url, tokens[index % len(tokens)], metric_bodies[index % 64], metrics,
                             scheduled)

        async def send_logs(index: int, scheduled: float) -> None:
            await post_agent(session, logs_url, tokens[index % len(tokens)], log_bodies[index % 16], logs, scheduled)

        print(f"  enrolled {len(tokens)} hosts; load starts", file=sys.stderr, flush=True)
        gc.collect()
        gc.freeze()
        gc.disable()
        started = time.perf_counter()
        try:
            await asyncio.gather(paced(metric_rate, args.duration, send_metrics),
                                 paced(log_rate, args.duration, send_logs))
        finally:
            gc.enable()
        return metrics, logs, time.perf_counter() - started


def _direct_clickhouse(url: str) -> tuple[float, float]:
    """Rows/s for the same store class inserting straight into ClickHouse: the ceiling for the platform."""
    from hostatlas.telemetry.storage.clickhouse import ClickHouseStore
    from hostatlas.telemetry.storage.contract import LogRecord, MetricPoint

    store = ClickHouseStore(url)
    store.migrate()
    now = int(time.time())
    points = [MetricPoint(1, 1 + index // 30, SERIES[index % 30][0], "", now, 1.0) for index in range(3000)]
    records = [LogRecord(1, 1, float(now), "/var/log/syslog", "info", "m", "{}", f"line {index} of the bench")
               for index in range(1000)]
    metric_runs, log_runs = [], []
    for _ in range(7):
        began = time.perf_counter()
        store.insert_metrics(points)
        metric_runs.append(len(points) / (time.perf_counter() - began))
        began = time.perf_counter()
        store.insert_logs(records)
        log_runs.append(len(records) / (time.perf_counter() - began))
    store.close()
    return sorted(metric_runs)[3], sorted(log_runs)[3]


def _line(label: str, kind: Tally, elapsed: float, unit: str) -> str:
    ms = [value * 1000 for value in kind.latencies]
    p50 = sorted(ms)[len(ms) // 2] if ms else float("nan")
    return (f"  {label:8s} {kind.accepted / elapsed:9.0f} {unit}/s  requests {len(ms) / elapsed:6.0f}/s  "
            f"errors {kind.errors:4d}  p50 {p50:7.2f} ms  p99 {percentile(ms, 0.99):7.2f} ms")


def _stored(target: Target, clickhouse: str | None) -> tuple[int, int]:
    """Samples and log lines actually in the store (not just acknowledged)."""
    if clickhouse:
        return clickhouse_rows(clickhouse)
    with sqlite3.connect(target.workdir / "hostatlas-data" / "telemetry.db") as connection:
        return (connection.execute("SELECT count(*) FROM metrics_raw").fetchone()[0],
                connection.execute("SELECT count(*) FROM logs").fetchone()[0])


def _wait_until_stored(target: Target, clickhouse: str | None, metrics: Tally,
                       logs: Tally) -> str:
    """Acknowledged is durable in the spool; report how long after the load the store had it all."""
    ended, stored = time.monotonic(), (0, 0)
    while time.monotonic() - ended < 120:
        stored = _stored(target, clickhouse)
        if stored[0] >= metrics.accepted and stored[1] >= logs.accepted:
            return (f"  stored   all {stored[0]} samples and {stored[1]} lines acknowledged, "
                    f"{time.monotonic() - ended:.1f} s after the load ended")
        time.sleep(0.1)
    return f"  stored   ONLY {stored[0]} of {metrics.accepted} samples, {stored[1]} of {logs.accepted} lines"


def bench(backend: str, args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        clickhouse = stack.enter_context(clickhouse_database(CLICKHOUSE_URL)) if backend == "clickhouse" else None
        extra = {"HOSTATLAS_CLICKHOUSE_URL": clickhouse} if clickhouse else {}
        with serve("sqlite", extra_env=extra, serve_args=tuple(args.serve_args.split())) as target:
            metrics, logs, elapsed = asyncio.run(_load(target, args))
            stored = _wait_until_stored(target, clickhouse, metrics, logs)
        print(f"[{backend}] {args.hosts} hosts, {args.log_rate:.0f} log lines/s offered, {elapsed:.0f} s")
        print(_line("metrics", metrics, elapsed, "samples"))
        print(_line("logs", logs, elapsed, "lines"))
        print(stored)
        if clickhouse:
            metric_rows, log_rows = _direct_clickhouse(clickhouse)
            print(f"  direct   {metric_rows:9.0f} samples/s in 3,000-row INSERTs, {log_rows:9.0f} lines/s in "
                  f"1,000-line INSERTs (median of 7)")


# --compare-cluster: the same ingestion through two nodes into two shards, and through one node into one.


@dataclass
class Side:
    label: str
    node_urls: list[str]
    tokens: list[str]
    clickhouse_url: str
    cpu_groups: dict[str, list[psutil.Process]]  # the nodes (with their storers), the ClickHouse servers


@dataclass
class Phase:
    """One closed-loop phase on one side: rows acknowledged a second, and a second until stored."""

    acknowledged: float
    stored: float
    p99_ms: float
    errors: int
    cpu: str


@contextlib.contextmanager
def _side(label: str, workdir: Path, *, nodes: int, cluster: str | None, hosts: int) -> Iterator[Side]:
    """``nodes`` API nodes (no worker: ingestion is what is measured) on PostgreSQL and Redis, into a fresh
    database on the cluster (``cluster``) or on its first server alone (None), with ``hosts`` enrolled."""
    servers = cluster_servers(CLICKHOUSE_CLUSTER_URL, CLICKHOUSE_CLUSTER)
    with postgres_schema() as database_url, \
            clickhouse_database(CLICKHOUSE_CLUSTER_URL, cluster=cluster) as clickhouse_url, \
            topology(workdir, database_url=database_url, redis_url=REDIS_URL, clickhouse_url=clickhouse_url,
                     clickhouse_cluster=cluster, nodes=nodes, workers=0,
                     env={"HOSTATLAS_RATE_LIMIT": "100000000/minute"}) as running:
        tokens = seed_agents(database_url, hosts, prefix="ingest")
        listening = listening_pids()
        platform = [psutil.Process(node.pid) for node in running.nodes]
        used = servers if cluster else servers[:1]
        yield Side(label, [node.url for node in running.nodes], tokens, clickhouse_url, {
            "nodes": [*platform, *(child for node in platform for child in node.children(recursive=True))],
            "clickhouse": [psutil.Process(listening[urlsplit(url).port]) for url in used],
            "client": [psutil.Process()]})


async def _closed(side: Side, path: str, bodies: list[bytes], concurrency: int, duration: float) -> tuple[Tally, float]:
    tally = Tally()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def request(index: int) -> bool:
            host = index % len(side.tokens)
            return await post_agent(session, side.node_urls[host % len(side.node_urls)] + path, side.tokens[host],
                                    bodies[index % len(bodies)], tally, time.perf_counter())

        run = await closed_loop(request, concurrency, duration)
    return tally, run.elapsed


def _phase(side: Side, kind: str, bodies: list[bytes], args: argparse.Namespace) -> Phase:
    """Send one kind closed loop for --duration, then wait until the store has all of it (bounded)."""
    column = 0 if kind == "metrics" else 1
    before = clickhouse_rows(side.clickhouse_url)[column]
    with CpuMeter(side.cpu_groups) as cpu:
        tally, elapsed = asyncio.run(_closed(side, f"/api/v1/agent/{kind}", bodies, args.concurrency, args.duration))
    ended = time.monotonic()
    while clickhouse_rows(side.clickhouse_url)[column] - before < tally.accepted and time.monotonic() - ended < 120:
        time.sleep(0.1)
    stored_after = elapsed + time.monotonic() - ended
    return Phase(tally.accepted / elapsed, tally.accepted / stored_after,
                 percentile([value * 1000 for value in tally.latencies], 0.99), tally.errors, str(cpu))


def compare_cluster(args: argparse.Namespace) -> None:
    """Both deployments up at once, idle but for the one measured; runs alternate between them so that
    whatever else the machine does weighs on both alike. Medians of --runs runs; the ratio of the medians."""
    rng = random.Random(1)
    now = int(time.time())
    bodies = {"metrics": [metrics_body(now, rng) for _ in range(64)],
              "logs": [logs_body(args.log_batch, now, rng) for _ in range(16)]}
    results: dict[tuple[str, str], list[Phase]] = {}
    with tempfile.TemporaryDirectory(prefix="hostatlas-ingest-") as workdir, contextlib.ExitStack() as stack:
        sides = [stack.enter_context(_side("1 node -> 1 shard", Path(workdir) / "one", nodes=1, cluster=None,
                                           hosts=args.hosts)),
                 stack.enter_context(_side("2 nodes -> 2 shards", Path(workdir) / "two", nodes=2,
                                           cluster=CLICKHOUSE_CLUSTER, hosts=args.hosts))]
        print(f"[compare-cluster] {args.hosts} hosts per side, closed loop {args.concurrency} connections, "
              f"{args.duration:.0f} s per phase, {args.runs} runs alternating, load average "
              f"{os.getloadavg()[0]:.1f}")
        for run in range(1, args.runs + 1):
            for side in sides:
                for kind, unit in (("metrics", "samples"), ("logs", "lines")):
                    phase = _phase(side, kind, bodies[kind], args)
                    results.setdefault((side.label, kind), []).append(phase)
                    print(f"  run {run} {side.label:20s} {kind:7s} {phase.acknowledged:9.0f} {unit}/s acknowledged, "
                          f"{phase.stored:9.0f}/s stored  p99 {phase.p99_ms:7.1f} ms  errors {phase.errors}  "
                          f"{phase.cpu}", flush=True)
    for kind, unit in (("metrics", "samples"), ("logs", "lines")):
        one, two = (statistics.median(phase.stored for phase in results[(side.label, kind)]) for side in sides)
        print(f"  median {kind:7s} stored: 1 node/1 shard {one:9.0f} {unit}/s, 2 nodes/2 shards {two:9.0f} {unit}/s: "
              f"ratio {two / one:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="embedded,clickhouse")
    parser.add_argument("--hosts", type=int, default=0, help="default: 2,000 embedded, 10,000 ClickHouse")
    parser.add_argument("--log-rate", type=float, default=0, help="default: 8,000 embedded, 50,000 ClickHouse")
    parser.add_argument("--rules", type=int, default=10, help="alert rules over every server, evaluated meanwhile")
    parser.add_argument("--log-batch", type=int, default=500, help="log lines per request")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (bounded to 120)")
    parser.add_argument("--serve-args", default="", help="extra `hostatlas serve` arguments")
    parser.add_argument("--compare-cluster", action="store_true",
                        help="closed loop through 2 nodes into the 2-shard cluster vs 1 node into 1 shard (below)")
    parser.add_argument("--runs", type=int, default=3, help="--compare-cluster: runs per side (medians)")
    parser.add_argument("--concurrency", type=int, default=32, help="--compare-cluster: connections")
    args = parser.parse_args()
    args.duration = min(args.duration, 120.0)
    if args.compare_cluster:
        args.hosts, args.runs = args.hosts or 10_000, max(1, min(args.runs, 9))
        compare_cluster(args)
        return
    for backend in (name.strip() for name in args.backends.split(",")):
        run = argparse.Namespace(**vars(args))
        run.hosts = args.hosts or (10_000 if backend == "clickhouse" else 2_000)
        run.log_rate = args.log_rate or (50_000.0 if backend == "clickhouse" else 8_000.0)
        bench(backend, run)


if __name__ == "__main__":
    main()
