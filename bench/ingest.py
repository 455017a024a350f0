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
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import orjson

from _harness import Target, percentile, serve

CLICKHOUSE_URL = os.environ.get("HOSTATLAS_BENCH_CLICKHOUSE_URL", "clickhouse://127.0.0.1:9000/default")
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


@dataclass
class Kind:
    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    errors: int = 0


def _metrics_body(now: int, rng: random.Random) -> bytes:
    # A healthy fleet: no value reaches the default alert rules' thresholds (90-95%), so the rules evaluating
    # meanwhile cost what they cost every 15 s, not a mass of pending series (bench/alerts.py measures that).
    return orjson.dumps({"series": [{"metric": metric, "labels": labels, "points": [[now, rng.uniform(0, 80)]]}
                                    for metric, labels in SERIES]})


def _logs_body(count: int, now: float, rng: random.Random) -> bytes:
    entries = []
    for _ in range(count):
        source, template = LINES[rng.randrange(len(LINES))]
        entries.append({"ts": now, "source": source,
                        "line": template.format(a=rng.randrange(256), b=rng.randrange(256), n=rng.randrange(99999))})
    return orjson.dumps({"entries": entries})


async def _post(session: aiohttp.ClientSession, url: str, token: str, body: bytes, kind: Kind,
                scheduled: float) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        async with session.post(url, data=body, headers=headers) as response:
            answer = await response.read()
            if response.status != 200:
                kind.errors += 1
                return
    except aiohttp.ClientError:
        kind.errors += 1
        return
    kind.latencies.append(time.perf_counter() - scheduled)
    kind.accepted += int(orjson.loads(answer)["accepted"])


async def _schedule(rate: float, duration: float, make: object) -> None:
    """Call make(index, scheduled_time) at a fixed rate, open loop; wait for all to finish."""
    assert callable(make)
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
        await asyncio.wait(pending, timeout=120)


async def _enrol(session: aiohttp.ClientSession, target: Target, hosts: int) -> list[str]:
    semaphore = asyncio.Semaphore(32)

    async def one(index: int) -> str:
        facts = {"machine_id": f"ingest-{index:06d}", "hostname": f"host-{index:06d}"}
        async with semaphore, session.post(f"{target.base_url}/api/v1/agent/register", json=facts,
                                           headers={"Authorization": f"Bearer {target.api_key}"}) as response:
            response.raise_for_status()
            return str((await response.json())["agent_token"])

    return list(await asyncio.gather(*(one(index) for index in range(hosts))))


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


async def _load(target: Target, args: argparse.Namespace) -> tuple[Kind, Kind, float]:
    rng = random.Random(1)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:
        tokens = await _enrol(session, target, args.hosts)
        await _add_rules(session, target, args.rules)
        metrics_url, logs_url = f"{target.base_url}/api/v1/agent/metrics", f"{target.base_url}/api/v1/agent/logs"
        metrics, logs = Kind(), Kind()
        metric_rate, log_rate = args.hosts / 15.0, args.log_rate / args.log_batch
        # Bodies are built before the clock starts, so the generator spends its time sending.
        now = int(time.time())
        metric_bodies = [_metrics_body(now, rng) for _ in range(64)]
        log_bodies = [_logs_body(args.log_batch, now, rng) for _ in range(16)]

        async def send_metrics(index: int, scheduled: float) -> None:
            await _post(session, metrics_url, tokens[index % len(tokens)], metric_bodies[index % 64], metrics,
                        scheduled)

        async def send_logs(index: int, scheduled: float) -> None:
            await _post(session, logs_url, tokens[index % len(tokens)], log_bodies[index % 16], logs, scheduled)

        print(f"  enrolled {len(tokens)} hosts; load starts", file=sys.stderr, flush=True)
        gc.collect()
        gc.freeze()
        gc.disable()
        started = time.perf_counter()
        try:
            await asyncio.gather(_schedule(metric_rate, args.duration, send_metrics),
                                 _schedule(log_rate, args.duration, send_logs))
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


def _clickhouse_database() -> str:
    from clickhouse_driver import Client

    name = f"hostatlas_bench_{uuid.uuid4().hex[:8]}"
    client = Client.from_url(CLICKHOUSE_URL)
    client.execute(f"CREATE DATABASE {name}")
    client.disconnect()
    return CLICKHOUSE_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_clickhouse_database(url: str) -> None:
    from clickhouse_driver import Client

    client = Client.from_url(CLICKHOUSE_URL)
    client.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]}")
    client.disconnect()


def _line(label: str, kind: Kind, elapsed: float, unit: str) -> str:
    ms = [value * 1000 for value in kind.latencies]
    p50 = sorted(ms)[len(ms) // 2] if ms else float("nan")
    return (f"  {label:8s} {kind.accepted / elapsed:9.0f} {unit}/s  requests {len(ms) / elapsed:6.0f}/s  "
            f"errors {kind.errors:4d}  p50 {p50:7.2f} ms  p99 {percentile(ms, 0.99):7.2f} ms")


def _stored(target: Target, clickhouse: str | None) -> tuple[int, int]:
    """Samples and log lines actually in the store (not just acknowledged)."""
    if clickhouse:
        from clickhouse_driver import Client

        client = Client.from_url(clickhouse)
        try:
            return (int(client.execute("SELECT count() FROM metrics_raw")[0][0]),
                    int(client.execute("SELECT count() FROM logs")[0][0]))
        finally:
            client.disconnect()
    with sqlite3.connect(target.workdir / "hostatlas-data" / "telemetry.db") as connection:
        return (connection.execute("SELECT count(*) FROM metrics_raw").fetchone()[0],
                connection.execute("SELECT count(*) FROM logs").fetchone()[0])


def _wait_until_stored(target: Target, clickhouse: str | None, metrics: Kind,
                       logs: Kind) -> str:
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
    extra: dict[str, str] = {}
    clickhouse = _clickhouse_database() if backend == "clickhouse" else None
    if clickhouse:
        extra["HOSTATLAS_CLICKHOUSE_URL"] = clickhouse
    try:
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
    finally:
        if clickhouse:
            _drop_clickhouse_database(clickhouse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="embedded,clickhouse")
    parser.add_argument("--hosts", type=int, default=0, help="default: 2,000 embedded, 10,000 ClickHouse")
    parser.add_argument("--log-rate", type=float, default=0, help="default: 8,000 embedded, 50,000 ClickHouse")
    parser.add_argument("--rules", type=int, default=10, help="alert rules over every server, evaluated meanwhile")
    parser.add_argument("--log-batch", type=int, default=500, help="log lines per request")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (bounded to 120)")
    parser.add_argument("--serve-args", default="", help="extra `hostatlas serve` arguments")
    args = parser.parse_args()
    args.duration = min(args.duration, 120.0)
    for backend in (name.strip() for name in args.backends.split(",")):
        run = argparse.Namespace(**vars(args))
        run.hosts = args.hosts or (10_000 if backend == "clickhouse" else 2_000)
        run.log_rate = args.log_rate or (50_000.0 if backend == "clickhouse" else 8_000.0)
        bench(backend, run)


if __name__ == "__main__":
    main()
