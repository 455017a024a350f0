"""Alert rule evaluation over a fleet: one pass of 10 rules across every server, on both telemetry backends.

    uv run python bench/alerts.py                                    # both backends, defaults below
    uv run python bench/alerts.py --backends clickhouse --servers 10000 --passes 7

Backends: ``embedded`` (SQLite database, the embedded telemetry store; 2,000 servers by default) and
``clickhouse`` (PostgreSQL database, ClickHouse store at HOSTATLAS_BENCH_CLICKHOUSE_URL; 10,000 servers).
Each server has 30 series (10 metrics x 3 label sets), a point every 15 s over the window plus the passes; 10
rules (``avg`` over 5 minutes, one per metric, scope all) cover every server. About 1% of the servers run hot, so
the first pass fires (incidents, events, states: the write side) and the later passes evaluate a fleet that is
mostly ok with a few firing series (the steady state). A pass is what the worker's ``alerts.evaluate`` does at
one tick: claim each rule's lease, one ``aggregate_window`` query per rule across the fleet, store the steps.

Printed: the first pass, the median (and worst) of the following passes, and each rule's query time (median over
the passes). Target (issue 13): a pass under 5 s on each backend. Bounded: --passes at most 21, --max-seconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select, text

from hostatlas.alerts import service
from hostatlas.alerts.evaluate import evaluate_rules
from hostatlas.alerts.models import AlertState
from hostatlas.db import migrate
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.servers.models import Server
from hostatlas.settings import Settings
from hostatlas.teams.models import DEFAULT_TEAM_SLUG, Team
from hostatlas.telemetry.storage.contract import MetricPoint, TelemetryStore

from _harness import clickhouse_database, postgres_schema

METRICS = [f"bench.metric_{index}" for index in range(10)]
LABEL_SETS = ["dev=a", "dev=b", "dev=c"]
WINDOW = 300
STEP = 15
INSERT_BATCH = 100_000
DEFAULT_SERVERS = {"embedded": 2_000, "clickhouse": 10_000}
# The first pass's instant: on the 15 s grid, recent (live evaluation reads the last minutes, which the ClickHouse
# store answers from its recent copy) and far enough back that the last pass's points are in the past too.
_NOW = int(time.time())
T0 = datetime.fromtimestamp(_NOW - _NOW % STEP - STEP * 30, UTC)




@contextmanager
def backend_pair(backend: str) -> Iterator[tuple[Database, Settings, TelemetryStore]]:
    with tempfile.TemporaryDirectory(prefix="hostatlas-bench-") as workdir, ExitStack() as stack:
        store: TelemetryStore
        if backend == "embedded":
            from hostatlas.telemetry.storage.embedded import EmbeddedStore

            url = f"sqlite:///{Path(workdir) / 'hostatlas.db'}"
            store = EmbeddedStore(Path(workdir) / "telemetry.db")
            clickhouse_url = None
        else:
            from hostatlas.telemetry.storage.clickhouse import ClickHouseStore

            url = stack.enter_context(postgres_schema())
            clickhouse_url = stack.enter_context(clickhouse_database())
            store = ClickHouseStore(clickhouse_url)
        store.migrate()
        db = Database(url)
        migrate.upgrade(db)
        settings = Settings(_env_file=None, database_url=url, data_dir=Path(workdir),
                            clickhouse_url=clickhouse_url, alert_interval=STEP)
        try:
            yield db, settings, store
        finally:
            store.close()
            db.dispose()


def insert_servers(db: Database, count: int) -> tuple[int, list[int]]:
    with db.session(write=False) as session:
        team_id = session.scalars(select(Team.id).where(Team.slug == DEFAULT_TEAM_SLUG)).one()
    rows = [{"team_id": team_id, "machine_id": f"m-{index}", "hostname": f"host-{index:05d}", "status": "online",
             "last_seen_at": T0 + timedelta(days=1), "tags": [], "created_at": T0} for index in range(count)]
    with db.session(write=True) as session:
        for start in range(0, count, 5_000):
            session.execute(insert(Server), rows[start:start + 5_000])
    with db.session(write=False) as session:
        ids = list(session.scalars(select(Server.id).where(Server.team_id == team_id).order_by(Server.id)))
    with db.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    return team_id, ids


def insert_points(store: TelemetryStore, team_id: int, servers: list[int], passes: int) -> int:
    """A point every 15 s from the first window's start to the last pass, per series; 1% of servers run hot."""
    rng = random.Random(13)
    hot = set(rng.sample(servers, max(1, len(servers) // 100)))
    start = int(T0.timestamp()) - WINDOW
    stamps = range(start + 5, int(T0.timestamp()) + STEP * passes, STEP)
    batch: list[MetricPoint] = []
    total = 0
    for server in servers:
        base = 95.0 if server in hot else 40.0
        for metric in METRICS:
            for labels in LABEL_SETS:
                batch.extend(MetricPoint(team_id, server, metric, labels, ts, base + rng.random() * 4)
                             for ts in stamps)
        if len(batch) >= INSERT_BATCH:
            store.insert_metrics(batch)
            total += len(batch)
            batch = []
    if batch:
        store.insert_metrics(batch)
        total += len(batch)
    return total


def make_rules(db: Database, team_id: int) -> list[int]:
    with db.session(write=True) as session:
        return [service.create_rule(session, team_id=team_id, now=T0 - timedelta(seconds=1), fields={
            "name": f"bench {metric}", "metric": metric, "aggregation": "avg", "window_s": WINDOW, "operator": ">=",
            "threshold": 90.0, "recovery_threshold": 80.0, "for_s": 0 if index % 2 else 30,
            "severity": "warning"}).id for index, metric in enumerate(METRICS)]


def bench(backend: str, args: argparse.Namespace) -> None:
    servers_wanted = args.servers or DEFAULT_SERVERS[backend]
    with backend_pair(backend) as (db, settings, store):
        started = time.monotonic()
        team_id, servers = insert_servers(db, servers_wanted)
        points = insert_points(store, team_id, servers, args.passes)
        print(f"[{backend}] {len(servers):,} servers x {len(METRICS) * len(LABEL_SETS)} series, {points:,} points "
              f"stored in {time.monotonic() - started:.1f} s")
        rules = make_rules(db, team_id)
        query_times: dict[int, list[float]] = defaultdict(list)
        passes: list[float] = []
        transitions: list[int] = []
        deadline = time.monotonic() + args.max_seconds
        for index in range(args.passes):
            now = T0 + timedelta(seconds=STEP * index)
            began = time.perf_counter()
            made = evaluate_rules(db, settings, now, store=store,
                                  on_query=lambda rule, seconds: query_times[rule].append(seconds))
            passes.append(time.perf_counter() - began)
            transitions.append(made)
            print(f"  pass {index + 1}: {passes[-1]:6.3f} s, {made} transitions")
            if time.monotonic() > deadline:
                break
        with db.session(write=False) as session:
            firing = session.scalar(select(func.count()).select_from(AlertState).where(AlertState.state == "firing"))
            events = session.scalar(select(func.count()).select_from(Event).where(Event.type.like("alert.%")))
        steady = passes[1:] or passes
        print(f"  first pass (fires ~1% of the fleet): {passes[0]:.3f} s; later passes: median "
              f"{statistics.median(steady):.3f} s, worst {max(steady):.3f} s ({len(steady)} passes)")
        print(f"  firing series at the end: {firing}, alert events: {events}")
        per_rule = [statistics.median(query_times[rule]) for rule in rules if query_times[rule]]
        print("  per-rule query time (median over passes, ms): "
              + ", ".join(f"{seconds * 1000:.0f}" for seconds in per_rule))
        print(f"  per-rule query: median {statistics.median(per_rule) * 1000:.0f} ms, "
              f"worst {max(per_rule) * 1000:.0f} ms, {len(servers) * len(LABEL_SETS):,} series per rule")
        quiet = [seconds for seconds, made in zip(passes, transitions, strict=True) if made == 0]
        verdict = "met" if quiet and max(quiet) < 5.0 else "MISSED"
        print(f"  target, a steady pass (no series changing state) under 5 s: {verdict}; passes where series "
              f"fired: {', '.join(f'{s:.1f} s' for s, m in zip(passes, transitions, strict=True) if m)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="embedded,clickhouse")
    parser.add_argument("--servers", type=int, default=0, help="default: 2,000 embedded, 10,000 ClickHouse")
    parser.add_argument("--passes", type=int, default=7, help="at most 21")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="cap on the passes' loop")
    args = parser.parse_args()
    args.passes = max(1, min(args.passes, 21))
    args.servers = max(0, min(args.servers, 50_000))
    for backend in args.backends.split(","):
        bench(backend.strip(), args)


if __name__ == "__main__":
    main()
