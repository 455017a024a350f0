"""Dashboard pages over a large team: every list page, a server's page and its 7-day charts, timed server-side.

    uv run python bench/dashboard.py                                 # SQLite, embedded telemetry store
    uv run python bench/dashboard.py --backends sqlite,postgres --requests 50
    uv run python bench/dashboard.py --backends postgres --telemetry clickhouse

For each backend: a fresh database (an SQLite file, or a private schema in the PostgreSQL database at
HOSTATLAS_BENCH_POSTGRES_URL, dropped afterwards) is migrated and seeded with bulk inserts through SQLAlchemy Core
on the real schema: --servers servers (5% offline, tagged), --heartbeats heartbeats in mixed states, --incidents
incidents (a few hundred open or acknowledged, the rest resolved, over a year), a few alert rules, and an owner user
(``users.service.create_user``). One server gets 7 days of agent metrics (a point a minute per series: cpu, load,
memory, swap, disks, network) written into the telemetry store the way the storer writes them (``insert_metrics``,
which folds the 1-minute and 1-hour rollups in). The telemetry store is the embedded one unless --telemetry
clickhouse (a new database at HOSTATLAS_BENCH_CLICKHOUSE_URL, dropped afterwards).

Then a real ``hostatlas serve --no-local-agent`` runs over that database on a loopback port (worker on); the bench
signs in through ``POST /login`` like a browser (CSRF cookie and field) and asks each page --warmup times, then
--requests times, one at a time. Server-side time is the ``Server-Timing: app;dur=`` header every dashboard
response carries; the client's wall time is printed too. Pages that answer 404 are reported "not built". A deep
page follows the pager's ``rel="next"`` link --deep times. The server's chart panels are those its page links
(``data-src=".../charts/..."``), else cpu, memory, disk, network and load; each is asked with ``range=7d`` and its
point count printed. Target (issue 15): every page's median under 300 ms server-side. The exit status is non-zero
only on errors (a 5xx, a failed sign-in, a failed seed), never because a page is slow.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import html
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, select, text

from hostatlas import secretbox
from hostatlas.db import migrate
from hostatlas.db.engine import Database
from hostatlas.heartbeats.models import Heartbeat
from hostatlas.models import metadata
from hostatlas.servers.models import Server
from hostatlas.settings import Settings
from hostatlas.teams.models import DEFAULT_TEAM_SLUG, Team
from hostatlas.telemetry.storage.contract import MetricPoint, TelemetryStore

from _harness import clickhouse_database, free_port, percentile, postgres_schema, wait_until_answers

EMAIL = "owner@bench.example"
PASSWORD = "bench-password-1234"
TARGET_MS = 300.0
BATCH = 5_000
TAGS = ["prod", "staging", "web", "db", "cache", "eu-west", "us-east", "k8s"]
DEFAULT_PANELS = ["cpu", "memory", "disk", "network", "load"]
# One server's series, as the agent sends them (CONTRACT.md, agent/src/hostatlas_agent/metrics.py).
SERIES: list[tuple[str, str, float, float]] = [  # metric, labels ("k=v"), base, spread
    ("cpu.percent", "", 35.0, 25.0), ("load.1", "", 1.2, 1.0), ("load.5", "", 1.1, 0.6), ("load.15", "", 1.0, 0.4),
    ("mem.used_bytes", "", 6.0e9, 1.0e9), ("mem.used_percent", "", 60.0, 10.0), ("swap.used_percent", "", 5.0, 3.0),
    ("disk.used_percent", "mount=/", 55.0, 2.0), ("disk.used_percent", "mount=/data", 70.0, 3.0),
    ("disk.read_bytes", "device=sda", 2.0e6, 2.0e6), ("disk.write_bytes", "device=sda", 4.0e6, 3.0e6),
    ("net.rx_bytes", "iface=eth0", 1.5e7, 1.0e7), ("net.tx_bytes", "iface=eth0", 8.0e6, 6.0e6),
]
HEARTBEAT_MIX = [("up", 0.80), ("late", 0.03), ("down", 0.05), ("paused", 0.05), ("new", 0.04), ("started", 0.03)]
SOURCES = [("server", 0.25), ("alert", 0.40), ("heartbeat", 0.20), ("crash", 0.10), ("manual", 0.05)]
SEVERITIES = [("critical", 0.25), ("warning", 0.55), ("info", 0.20)]
# Core tables, not ORM entities: a Core executemany skips the ORM's per-row bulk bookkeeping (about twice as fast).
SERVERS, SERVER_TAGS = metadata.tables["servers"], metadata.tables["server_tags"]
HEARTBEATS, HEARTBEAT_TAGS = metadata.tables["heartbeats"], metadata.tables["heartbeat_tags"]
INCIDENTS = metadata.tables["incidents"]
SERVER_TIMING = re.compile(r"app;dur=([0-9.]+)")
NEXT_LINK = re.compile(r'<a\b[^>]*\bhref="([^"]+)"[^>]*\brel="next"|<a\b[^>]*\brel="next"[^>]*\bhref="([^"]+)"')
CHART_SRC = re.compile(r'data-src="(/servers/\d+/charts/[^"?]+)')


class BenchError(Exception):
    """Something the bench cannot measure past: a failed seed, sign-in, or a server error."""


@dataclass
class Timing:
    page: str
    status: str = "ok"  # ok | not built | error <code>
    server_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    points: str = ""
    note: str = ""


def pick(rng: random.Random, mix: list[tuple[str, float]]) -> str:
    return rng.choices([name for name, _ in mix], weights=[weight for _, weight in mix])[0]


def step(label: str, started: float) -> float:
    now = time.monotonic()
    print(f"  {label}: {now - started:.1f} s", flush=True)
    return now


# -- seeding ---------------------------------------------------------------------------------------------------

def seed_servers(db: Database, team_id: int, count: int, now: datetime, rng: random.Random) -> list[int]:
    rows: list[dict[str, object]] = []
    tags_of: list[list[str]] = []
    tag_rows: list[dict[str, object]] = []
    offline = set(rng.sample(range(count), count // 20))
    for index in range(count):
        role = ("web", "db", "cache", "worker", "lb")[index % 5]
        tags = sorted(rng.sample(TAGS, rng.randint(1, 3)))
        tags_of.append(tags)
        down = index in offline
        ago = timedelta(minutes=rng.randint(10, 4320)) if down else timedelta(seconds=rng.randint(0, 59))
        seen = now - ago
        rows.append({"team_id": team_id, "machine_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                     "hostname": f"{role}-{index:05d}.{('fra', 'ams', 'iad', 'sfo')[index % 4]}.example.net",
                     "display_name": None, "ip_address": f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}",
                     "os": ("Ubuntu 24.04 LTS", "Debian 12", "Rocky Linux 9")[index % 3], "kernel": "6.8.0-45-generic",
                     "cpu_cores": (2, 4, 8, 16)[index % 4], "ram_total_mb": (4096, 8192, 16384, 65536)[index % 4],
                     "agent_version": "1.4.2", "status": "offline" if down else "online", "last_seen_at": seen,
                     "offline_since": seen + timedelta(minutes=5) if down else None,
                     "uptime_s": rng.randint(3600, 90 * 86_400), "boot_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                     "tags": tags, "created_at": now - timedelta(days=rng.randint(1, 700))})
    with db.session(write=True) as session:
        for start in range(0, count, BATCH):
            session.execute(insert(SERVERS), rows[start:start + BATCH])
    with db.session(write=False) as session:
        ids = list(session.scalars(select(Server.id).where(Server.team_id == team_id).order_by(Server.id)))
    for server_id, tags in zip(ids, tags_of, strict=True):
        tag_rows += [{"server_id": server_id, "tag": tag, "team_id": team_id} for tag in tags]
    with db.session(write=True) as session:
        for start in range(0, len(tag_rows), BATCH):
            session.execute(insert(SERVER_TAGS), tag_rows[start:start + BATCH])
    return ids


def seed_heartbeats(db: Database, team_id: int, count: int, servers: list[int], now: datetime,
                    rng: random.Random) -> None:
    rows = []
    for index in range(count):
        status = pick(rng, HEARTBEAT_MIX)
        interval = rng.choice([60, 300, 900, 3600, 86_400])
        grace = max(60, interval // 5)
        last_ping = None if status == "new" else now - timedelta(seconds=rng.randint(0, interval))
        due = deadline = None
        if status in ("up", "started"):
            due = now + timedelta(seconds=interval)
            deadline = due
        elif status == "late":
            due, deadline = now - timedelta(seconds=30), now + timedelta(seconds=grace + 3600)
        elif status == "down":
            last_ping = now - timedelta(seconds=interval * 3)
        token = secrets.token_urlsafe(16)
        rows.append({"team_id": team_id, "name": f"Nightly job {index:04d}", "slug": f"job-{index:04d}",
                     "ping_token_hash": hashlib.sha256(token.encode()).hexdigest(), "ping_token": token,
                     "interval": interval, "schedule": None, "timezone": "UTC", "grace": grace,
                     "tags": [TAGS[index % len(TAGS)]], "server_id": rng.choice(servers) if index % 3 else None,
                     "min_runtime": None, "max_runtime": None, "manual_resume": False, "status": status,
                     "last_ping_at": last_ping, "last_start_at": now if status == "started" else None,
                     "open_runs": {}, "last_duration_s": rng.uniform(0.5, 120.0) if last_ping else None,
                     "next_due_at": due, "deadline_at": deadline, "created_at": now - timedelta(days=90),
                     "updated_at": now})
    with db.session(write=True) as session:
        session.execute(insert(HEARTBEATS), rows)
        ids = list(session.scalars(select(Heartbeat.id).where(Heartbeat.team_id == team_id).order_by(Heartbeat.id)))
        session.execute(insert(HEARTBEAT_TAGS), [{"heartbeat_id": heartbeat_id, "tag": TAGS[index % len(TAGS)],
                                                "team_id": team_id} for index, heartbeat_id in enumerate(ids)])


def seed_incidents(db: Database, team_id: int, count: int, open_count: int, servers: list[int], now: datetime,
                   rng: random.Random) -> None:
    year = 365 * 86_400
    # Ids rise with detected_at, as they do when incidents are opened as problems happen; the newest are open.
    for start in range(0, count, BATCH):
        rows = []
        for index in range(start, min(count, start + BATCH)):
            detected = now - timedelta(seconds=year * (count - index) / count + rng.randint(0, 60))
            source = pick(rng, SOURCES)
            unresolved = index >= count - open_count
            status = ("open" if rng.random() < 0.7 else "acknowledged") if unresolved else "resolved"
            server_id = rng.choice(servers) if source in ("server", "alert", "crash") else None
            resolved = detected + timedelta(seconds=rng.randint(60, 6 * 3600))
            rows.append({"team_id": team_id, "title": f"{source} problem {index}: service unhealthy",
                         "severity": pick(rng, SEVERITIES), "status": status,
                         "type": "manual" if source == "manual" else "automatic", "source": source,
                         "source_key": None if source == "manual" else f"{source}:{index}", "server_id": server_id,
                         "service": "nginx" if source == "crash" else None, "parent_id": None, "suppressed": False,
                         "detected_at": detected,
                         "acknowledged_at": detected + timedelta(minutes=3) if status != "open" else None,
                         "acknowledged_by": "api_key:1:bench" if status != "open" else None,
                         "resolved_at": None if unresolved else resolved,
                         "resolved_by": None if unresolved else "system",
                         "created_at": detected, "updated_at": detected if unresolved else resolved})
        with db.session(write=True) as session:
            session.execute(insert(INCIDENTS), rows)


def seed_rules_and_owner(db: Database, team_id: int, now: datetime) -> None:
    from hostatlas.alerts import service as alerts
    from hostatlas.users import service as users
    from hostatlas.users.models import Role

    with db.session(write=True) as session:
        team = session.get(Team, team_id)
        assert team is not None
        users.create_user(session, email=EMAIL, password=PASSWORD, team=team, role=Role.OWNER, now=now)
        for index, metric in enumerate(["cpu.percent", "mem.used_percent", "disk.used_percent", "load.5",
                                        "swap.used_percent"]):
            alerts.create_rule(session, team_id=team_id, now=now, fields={
                "name": f"bench {metric}", "metric": metric, "aggregation": "avg", "window_s": 300,
                "operator": ">=", "threshold": 90.0 if index != 3 else 8.0, "severity": "warning"})


def seed_metrics(store: TelemetryStore, team_id: int, server_id: int, now: int, step_s: int,
                 rng: random.Random) -> int:
    """7 days (less 10 minutes, inside telemetry_max_age and raw retention) of a point every ``step_s``."""
    stamps = range(now - 7 * 86_400 + 600, now, step_s)
    total = 0
    for metric, labels, base, spread in SERIES:
        points = [MetricPoint(team_id, server_id, metric, labels, ts,
                              max(0.0, base + spread * (0.6 * ((ts // 3600) % 24 - 12) / 12 + rng.uniform(-0.4, 0.4))))
                  for ts in stamps]
        for start in range(0, len(points), 20_000):
            store.insert_metrics(points[start:start + 20_000])
        total += len(points)
    return total




@dataclass
class Seeded:
    env: dict[str, str]
    workdir: Path
    metrics_server: int
    points: int


@contextlib.contextmanager
def seeded(backend: str, args: argparse.Namespace) -> Iterator[Seeded]:
    rng = random.Random(15)
    with tempfile.TemporaryDirectory(prefix="hostatlas-bench-") as workdir, contextlib.ExitStack() as stack:
        started = began = time.monotonic()
        database_url = (f"sqlite:///{Path(workdir) / 'hostatlas.db'}" if backend == "sqlite"
                        else stack.enter_context(postgres_schema()))
        clickhouse_url = stack.enter_context(clickhouse_database()) if args.telemetry == "clickhouse" else None
        key = secretbox.Keyring.new_key()
        env = {**os.environ, "HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_DATA_DIR": workdir,
               "HOSTATLAS_SECRET_KEY": key, "HOSTATLAS_LOG_LEVEL": "WARNING",
               "HOSTATLAS_RATE_LIMIT": "100000000/minute",
               # The seeded fleet's check-ins are frozen: no mass offline sweep while the pages are timed.
               "HOSTATLAS_OFFLINE_AFTER": "86400"}
        env.pop("HOSTATLAS_CLICKHOUSE_URL", None)
        if clickhouse_url:
            env["HOSTATLAS_CLICKHOUSE_URL"] = clickhouse_url
        settings = Settings(_env_file=None, database_url=database_url, data_dir=Path(workdir),
                            clickhouse_url=clickhouse_url, secret_key=key)
        previous = secretbox.install(secretbox.Keyring([key]))
        db = Database(database_url)
        try:
            migrate.upgrade(db)
            started = step("migrate", started)
            now = datetime.now(UTC).replace(microsecond=0)
            with db.session(write=False) as session:
                team_id = session.scalars(select(Team.id).where(Team.slug == DEFAULT_TEAM_SLUG)).one()
            servers = seed_servers(db, team_id, args.servers, now, rng)
            started = step(f"{len(servers):,} servers (5% offline) and their tags", started)
            seed_heartbeats(db, team_id, args.heartbeats, servers, now, rng)
            started = step(f"{args.heartbeats:,} heartbeats", started)
            seed_incidents(db, team_id, args.incidents, args.open_incidents, servers, now, rng)
            started = step(f"{args.incidents:,} incidents ({args.open_incidents} unresolved)", started)
            seed_rules_and_owner(db, team_id, now)
            # PostgreSQL's autovacuum analyzes a table this size on its own; the platform never runs ANALYZE on
            # SQLite, so a real SQLite database has no statistics unless --analyze (see docs/benchmarks.md).
            analyzed = backend == "postgres" or args.analyze
            if analyzed:
                with db.engine.begin() as connection:
                    connection.execute(text("ANALYZE"))
            started = step(f"owner user, 5 alert rules{', ANALYZE' if analyzed else ''}", started)
            from hostatlas.telemetry.storage.stores import open_store

            store = open_store(settings)
            try:
                metrics_server = servers[0]
                points = seed_metrics(store, team_id, metrics_server, int(time.time()), args.metric_step, rng)
            finally:
                store.close()
            started = step(f"{points:,} metric points ({len(SERIES)} series x 7 days, one every "
                           f"{args.metric_step} s) for server {metrics_server}, {args.telemetry} store", started)
        finally:
            db.dispose()
            secretbox.install(previous)
        print(f"  seeded in {time.monotonic() - began:.1f} s", flush=True)
        yield Seeded(env, Path(workdir), metrics_server, points)


# -- serving and measuring --------------------------------------------------------------------------------------

@contextlib.contextmanager
def serving(seed: Seeded) -> Iterator[str]:
    port = free_port()
    log_path = seed.workdir / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "hostatlas", "serve", "--host", "127.0.0.1", "--port",
                                    str(port), "--no-access-log", "--no-local-agent"],
                                   cwd=seed.workdir, env=seed.env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            if not wait_until_answers(f"{base}/readyz", timeout=60):
                raise BenchError(f"hostatlas serve did not start:\n{log_path.read_text()[-3000:]}")
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    tail = log_path.read_text()
    if "Traceback" in tail:
        print("  serve.log has tracebacks:\n" + tail[-3000:])


def sign_in(client: httpx.Client) -> None:
    page = client.get("/login")
    match = re.search(r'name="csrf_token"\s+value="([^"]+)"', page.text) or re.search(
        r'value="([^"]+)"\s+name="csrf_token"', page.text)
    if page.status_code != 200 or match is None:
        raise BenchError(f"GET /login: {page.status_code}, no csrf_token field")
    answer = client.post("/login", data={"csrf_token": html.unescape(match.group(1)), "email": EMAIL,
                                         "password": PASSWORD, "next": "/"})
    if answer.status_code != 303 or "hostatlas_session" not in "".join(client.cookies.keys()):
        raise BenchError(f"POST /login: {answer.status_code}, not signed in: {answer.text[:300]}")


def measure(client: httpx.Client, label: str, url: str, args: argparse.Namespace, *, chart: bool = False) -> Timing:
    timing = Timing(label)
    for index in range(args.warmup + args.requests):
        began = time.perf_counter()
        response = client.get(url)
        wall = (time.perf_counter() - began) * 1000
        if response.status_code == 404 and index == 0:
            timing.status = "not built"
            return timing
        if response.status_code != 200:
            timing.status = f"error {response.status_code}"
            timing.note = response.text[:200].replace("\n", " ")
            return timing
        if index == 0 and chart:
            body = response.json()
            series = body.get("series", [])
            timing.points = "/".join(str(len(s.get("values", []))) for s in series) or "0"
            meta = body.get("meta") or {}
            timing.note = (f"step {meta['step']} s, {meta['tier']} tier" if "step" in meta and "tier" in meta
                           else f"{len(body.get('x', []))} x, {len(series)} series")
        if index < args.warmup:
            continue
        found = SERVER_TIMING.search(response.headers.get("server-timing", ""))
        if found is None:
            timing.status = "error: no Server-Timing"
            return timing
        timing.server_ms.append(float(found.group(1)))
        timing.client_ms.append(wall)
    return timing


def next_link(body: str) -> str | None:
    found = NEXT_LINK.search(body)
    return html.unescape(found.group(1) or found.group(2)) if found else None


def deep_url(client: httpx.Client, start: str, hops: int) -> tuple[str | None, int]:
    """The page ``hops`` "Next page" links after ``start`` (or as deep as the pager goes)."""
    url, depth = start, 0
    while depth < hops:
        response = client.get(url)
        if response.status_code != 200:
            return None, depth
        following = next_link(response.text)
        if following is None:
            break
        url = following if following.startswith("/") else f"{start.split('?')[0]}{following}"
        depth += 1
    return (url, depth) if depth else (None, 0)


def run_pages(base: str, seed: Seeded, args: argparse.Namespace) -> list[Timing]:
    results: list[Timing] = []
    with httpx.Client(base_url=base, timeout=60, trust_env=False) as client:
        sign_in(client)
        server = seed.metrics_server
        pages = [("/", "/"), ("/servers", "/servers"), ("/servers?status=offline", "/servers?status=offline"),
                 ("/incidents", "/incidents"), ("/incidents?status=open", "/incidents?status=open"),
                 ("/heartbeats", "/heartbeats"), ("/alerts", "/alerts"), ("/webhooks", "/webhooks"),
                 ("/api-keys", "/api-keys"), ("/team", "/team")]
        for label, url in pages:
            results.append(measure(client, label, url, args))
            report_line(results[-1])
        for start in ("/incidents", "/servers"):
            deep, depth = deep_url(client, start, args.deep)
            if deep is None:
                timing = Timing(f"{start}, deep page", status="not built" if any(
                    r.page == start and r.status == "not built" for r in results) else "no pager")
            else:
                timing = measure(client, f"{start}, page {depth + 1}", deep, args)
            results.append(timing)
            report_line(timing)
        detail = measure(client, f"/servers/{server}", f"/servers/{server}", args)
        results.append(detail)
        report_line(detail)
        panels = DEFAULT_PANELS
        if detail.status == "ok":
            linked = list(dict.fromkeys(src.rsplit("/", 1)[1] for src in CHART_SRC.findall(
                client.get(f"/servers/{server}").text)))
            panels = linked or panels
        for panel in panels:
            chart = measure(client, f"chart {panel} 7d", f"/servers/{server}/charts/{panel}?range=7d", args,
                            chart=True)
            results.append(chart)
            report_line(chart)
    return results


def verdict(timing: Timing) -> str:
    if timing.status != "ok":
        return timing.status
    return "PASS" if statistics.median(timing.server_ms) < TARGET_MS else "FAIL"


def report_line(timing: Timing) -> None:
    if timing.status != "ok":
        print(f"  {timing.page:<34} {timing.status} {timing.note}", flush=True)
        return
    server, wall = timing.server_ms, timing.client_ms
    print(f"  {timing.page:<34} server median {statistics.median(server):7.1f}  p95 {percentile(server, 0.95):7.1f}"
          f"  max {max(server):7.1f}   wall median {statistics.median(wall):7.1f} ms  {timing.points}"
          f"{'  (' + timing.note + ')' if timing.note else ''}", flush=True)


def table(backend: str, args: argparse.Namespace, results: list[Timing]) -> None:
    print(f"\n[{backend}, {args.telemetry} telemetry] {args.requests} requests per page after {args.warmup} warm-up; "
          f"server-side from Server-Timing (ms); target median < {TARGET_MS:.0f} ms")
    print("| page | median | p95 | max | wall median | points | verdict |\n|---|---:|---:|---:|---:|---|---|")
    for t in results:
        if t.status == "ok":
            print(f"| `{t.page}` | {statistics.median(t.server_ms):.1f} | {percentile(t.server_ms, 0.95):.1f} | "
                  f"{max(t.server_ms):.1f} | {statistics.median(t.client_ms):.1f} | {t.points} | {verdict(t)} |")
        else:
            print(f"| `{t.page}` | | | | | | {t.status} |")


def bench(backend: str, args: argparse.Namespace) -> bool:
    print(f"[{backend}] seeding", flush=True)
    with seeded(backend, args) as seed:
        began = time.monotonic()
        with serving(seed) as base:
            step("hostatlas serve up", began)
            results = run_pages(base, seed, args)
    table(backend, args, results)
    return not any(t.status.startswith("error") for t in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite", help="sqlite, postgres or both, comma-separated")
    parser.add_argument("--telemetry", choices=["embedded", "clickhouse"], default="embedded")
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--heartbeats", type=int, default=1_000)
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--open-incidents", type=int, default=300, help="of --incidents, unresolved")
    parser.add_argument("--metric-step", type=int, default=60, help="seconds between seeded metric points")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page (at most 500)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--analyze", action="store_true", help="ANALYZE the SQLite database too (PostgreSQL always)")
    parser.add_argument("--deep", type=int, default=5, help="pager hops for the deep page")
    args = parser.parse_args()
    args.servers = max(1, min(args.servers, 100_000))
    args.heartbeats = max(0, min(args.heartbeats, 20_000))
    args.incidents = max(0, min(args.incidents, 1_000_000))
    args.open_incidents = max(0, min(args.open_incidents, args.incidents))
    args.metric_step = max(15, min(args.metric_step, 3600))
    args.requests = max(1, min(args.requests, 500))
    args.warmup = max(0, min(args.warmup, 50))
    args.deep = max(1, min(args.deep, 50))
    ok = True
    for backend in (name.strip() for name in args.backends.split(",") if name.strip()):
        if backend not in ("sqlite", "postgres"):
            parser.error(f"unknown backend {backend!r}")
        try:
            ok = bench(backend, args) and ok
        except BenchError as exc:
            print(f"[{backend}] error: {exc}", flush=True)
            ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
