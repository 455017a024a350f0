"""A minute of bench/soak.py in the suite: 1,500 simulated agents (check-ins, metrics, logs, heartbeat pings on
the agent's own schedule) against two API nodes and a worker on PostgreSQL, Redis and the two-shard ClickHouse
cluster (tests/topology.py). Nothing may fail, everything acknowledged must be stored exactly once (counted in
ClickHouse and PostgreSQL), and no platform process may grow more than RSS_BOUND_MIB after the warm-up.
The bench runs the same code with 10,000 agents for 10 minutes (docs/benchmarks.md)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from tests.conftest import REDIS_URL, _postgres_problem, private_postgres_schema, require_service
from tests.support import CLICKHOUSE_CLUSTER

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import soak  # noqa: E402 - bench/ is on the path only now

# Topology start (~20 s, more on a loaded machine) + 60 s of load + the storage wait.
pytestmark = [pytest.mark.long_running(85), pytest.mark.clickhouse, pytest.mark.postgres,
              pytest.mark.redis, pytest.mark.timeout(300)]

# A leak of a few hundred bytes a request (45,000 requests after the warm-up) breaks this bound; the
# allocator's and caches' settling after the warm-up stays well within it (measured: under 2 MiB).
RSS_BOUND_MIB = 24.0
PLAN = soak.Plan(agents=1_500, duration=60.0, sample_every=5.0, warmup=20.0, rss_bound_mib=RSS_BOUND_MIB,
                 connections=512, store_timeout=60.0)


@pytest.fixture
def install_url() -> Iterator[str]:
    problem = _postgres_problem()
    require_service("PostgreSQL", problem is None, problem or "")
    with private_postgres_schema("hostatlas_soak") as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    """The tests' Redis, in a database number of the soak's own."""
    url = urlunsplit(urlsplit(REDIS_URL)._replace(path="/7"))
    try:
        reachable = bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        reachable = False
    require_service("Redis", reachable, url)
    return url


@pytest.fixture
def cluster_db_url(clickhouse_cluster_url: str) -> Iterator[str]:
    """A database of the soak's own on every server of the cluster (its URL on shard 1)."""
    with soak.clickhouse_database(clickhouse_cluster_url, cluster=CLICKHOUSE_CLUSTER) as url:
        yield url


def test_a_minute_of_1500_agents_on_two_nodes_fails_nothing_stores_everything_once_and_stays_flat(
        tmp_path: Path, install_url: str, redis_url: str, cluster_db_url: str) -> None:
    servers = soak.cluster_servers(cluster_db_url, CLICKHOUSE_CLUSTER)
    with soak.deployed(tmp_path, agents=PLAN.agents, database_url=install_url,
                       clickhouse_url=cluster_db_url, clickhouse_servers=servers,
                       cluster=CLICKHOUSE_CLUSTER, redis_url=redis_url, nodes=2, workers=1) as deployment:
        report = soak.run(deployment, PLAN)
    figures = "\n".join(soak.lines(report))
    print(figures)  # the soak's figures, with -s or -rP
    for endpoint in soak.ENDPOINTS:
        planned = int(PLAN.rate(endpoint) * PLAN.duration)
        assert len(report.tally(endpoint).latencies) == planned, figures
    stored = {count.what: count for count in report.stored}
    assert {what: count.stored for what, count in stored.items()} == {
        what: count.acknowledged for what, count in stored.items()}, figures
    assert stored["metric samples"].acknowledged == int(PLAN.rate("metrics") * PLAN.duration) * 30, figures
    assert stored["agents checked in"].acknowledged == PLAN.agents, figures
    assert report.problems() == [], figures
