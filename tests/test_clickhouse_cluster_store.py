"""ClickHouseStore on a cluster (`scripts/clickhouse-cluster`: two ClickHouse servers and ZooKeeper on loopback).

The store contract runs on the two shards in test_telemetry_store.py and test_telemetry_windows.py; these tests
hold what only a cluster has: where rows land (each server's on one shard, both shards used), retention on
every shard, a ping that needs every shard, and replication with ReplicatedMergeTree.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from clickhouse_driver import Client  # type: ignore[import-untyped]

from hostatlas.settings import Settings
from hostatlas.telemetry.storage.clickhouse import ClickHouseStore
from hostatlas.telemetry.storage.contract import Agg, LogQuery, LogRecord, MetricPoint, Retention, Tier
from hostatlas.telemetry.storage.stores import open_store
from tests.cluster_store import ClusterStore, cluster_store, shard_urls
from tests.support import CLICKHOUSE_CLUSTER, CLICKHOUSE_MIRROR_CLUSTER, wait_until
from tests.telemetry_data import DAY, DAY_START, TEAM, series_points

pytestmark = pytest.mark.clickhouse

SERVER_IDS = list(range(1, 41))


@pytest.fixture(scope="module")
def made(clickhouse_cluster_url: str) -> Iterator[ClusterStore]:
    with cluster_store(clickhouse_cluster_url) as database:
        yield database


@pytest.fixture
def store(made: ClusterStore) -> Iterator[ClickHouseStore]:
    made.empty()
    opened = made.open()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def shards(clickhouse_cluster_url: str) -> Iterator[list[Client]]:
    clients = [Client.from_url(url) for url in shard_urls(clickhouse_cluster_url)]
    yield clients
    for client in clients:
        client.disconnect()


def _servers_on(shard: Client, database: str, table: str) -> dict[int, int]:
    rows = shard.execute(f"SELECT server_id, count() FROM `{database}`.`{table}_local` GROUP BY server_id")
    return dict(rows)


def test_each_servers_rows_live_on_one_shard_and_both_shards_are_used(
        store: ClickHouseStore, made: ClusterStore, shards: list[Client]) -> None:
    points = [MetricPoint(TEAM, server, "cpu.percent", "", DAY_START + step * 15, float(step))
              for server in SERVER_IDS for step in range(20)]
    store.insert_metrics(points)
    store.insert_logs([LogRecord(TEAM, server, DAY_START + 1.5, "/var/log/syslog", "info", "m", "{}", f"line {server}")
                       for server in SERVER_IDS])
    for table, per_server in (("metrics_raw", 20), ("metrics_recent", 20), ("metrics_1m", 5), ("logs", 1)):
        placed = [_servers_on(shard, made.database, table) for shard in shards]
        assert all(placed), f"{table}: a shard holds nothing: {placed}"
        assert not set(placed[0]) & set(placed[1]), f"{table}: a server's rows straddle the shards"
        assert sorted({**placed[0], **placed[1]}) == SERVER_IDS
        # Every row arrived, and rows were not copied to both: the 1m rollup holds one state per bucket
        # (a minute of 15-s points is one bucket until merges fold parts, hence the bound).
        counts = {**placed[0], **placed[1]}
        assert all(count >= per_server if table == "metrics_1m" else count == per_server
                   for count in counts.values()), (table, counts)
    # Read back through the Distributed tables, from either server, answers are whole.
    for url in shard_urls(made.url):
        database_url = urlunsplit(urlsplit(url)._replace(path=f"/{made.database}"))
        other = ClickHouseStore(database_url, cluster=CLICKHOUSE_CLUSTER)
        try:
            counted = series_points(other, step=300, agg=Agg.COUNT, tier=Tier.MINUTE, servers=tuple(SERVER_IDS),
                                    start=DAY_START, end=DAY_START + 300)
            assert {server: values for server, values in counted.items()} == {
                server: {DAY_START: 20.0} for server in SERVER_IDS}
            assert other.count_logs(LogQuery(TEAM, None, None, None, None, None, None, 100)) == len(SERVER_IDS)
        finally:
            other.close()


def test_retention_drops_old_days_on_every_shard(store: ClickHouseStore, made: ClusterStore,
                                                 shards: list[Client]) -> None:
    stamps = range(DAY_START - 2 * DAY, DAY_START + DAY, 600)
    store.insert_metrics([MetricPoint(TEAM, server, "load.1", "", ts, 1.0) for server in SERVER_IDS for ts in stamps])
    now = DAY_START + DAY
    retention = Retention(raw_seconds=DAY + 3 * 3600, minute_seconds=DAY, hour_seconds=400 * DAY,
                          logs_seconds=DAY)
    removed = store.enforce_retention(retention, now)
    cutoff = now - retention.raw_seconds
    expected_removed = len(SERVER_IDS) * sum(1 for ts in stamps if ts < cutoff)
    assert removed["metrics_raw"] == expected_removed
    for shard in shards:
        oldest = shard.execute(f"SELECT min(ts), count() FROM `{made.database}`.metrics_raw_local")[0]
        assert oldest[1] > 0 and oldest[0] >= cutoff, oldest
    kept = series_points(store, step=600, agg=Agg.COUNT, tier=Tier.RAW, metric="load.1", servers=tuple(SERVER_IDS),
                         start=stamps[0], end=now)
    assert sorted(kept) == SERVER_IDS
    assert all(sorted(values) == [ts for ts in stamps if ts >= cutoff] for values in kept.values())


def test_the_settings_open_a_cluster_store(made: ClusterStore) -> None:
    made.empty()
    store = open_store(Settings(clickhouse_url=made.url, clickhouse_cluster=CLICKHOUSE_CLUSTER))
    try:
        store.ping()
        store.insert_metrics([MetricPoint(TEAM, 7, "load.1", "", DAY_START, 3.0)])
        assert store.metric_names(TEAM, 7) == [("load.1", "")]
    finally:
        store.close()


def test_a_cluster_name_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(ValueError, match="cluster name"):
        ClickHouseStore("clickhouse://127.0.0.1:9101/db", cluster="x; DROP")
    with pytest.raises(ValueError):
        Settings(clickhouse_cluster="bad name")


def test_replicated_tables_hold_the_same_rows_on_both_replicas(clickhouse_cluster_url: str,
                                                              shards: list[Client]) -> None:
    """One shard, two replicas (`hostatlas_mirror`): rows written through either server reach both, rollups too."""
    database = f"hostatlas_test_{uuid.uuid4().hex[:10]}"
    url = urlunsplit(urlsplit(clickhouse_cluster_url)._replace(path=f"/{database}"))
    # Both servers are one shard here, although their {shard} macros differ: the path names the shard itself.
    store = ClickHouseStore(url, cluster=CLICKHOUSE_MIRROR_CLUSTER, replicated=True,
                            replica_path=f"/clickhouse/tables/mirror-{database}/{{table}}")
    try:
        store.migrate()
        points = [MetricPoint(TEAM, server, "cpu.percent", "", DAY_START + step * 15, float(step))
                  for server in SERVER_IDS[:10] for step in range(8)]
        store.insert_metrics(points)
        engines = shards[1].execute("SELECT engine FROM system.tables WHERE database = %(d)s AND name = "
                                    "'metrics_raw_local'", {"d": database})
        assert engines == [("ReplicatedMergeTree",)]

        def replicated() -> bool:
            counts = [shard.execute(f"SELECT count() FROM `{database}`.metrics_raw_local")[0][0] for shard in shards]
            minutes = [shard.execute(f"SELECT countMerge(count_v) FROM `{database}`.metrics_1m_local")[0][0]
                       for shard in shards]
            return counts == [len(points)] * 2 and minutes == [len(points)] * 2

        wait_until(replicated, timeout=30, what="both replicas to hold every row and rollup")
        # Read through the Distributed table, each row counts once, not once per replica.
        counted = series_points(store, step=300, agg=Agg.COUNT, tier=Tier.RAW, servers=tuple(SERVER_IDS[:10]),
                                start=DAY_START, end=DAY_START + 300)
        assert sum(sum(values.values()) for values in counted.values()) == len(points)
    finally:
        store.close()
        shards[0].execute(f"DROP DATABASE IF EXISTS `{database}` ON CLUSTER {CLICKHOUSE_MIRROR_CLUSTER}",
                          settings={"distributed_ddl_task_timeout": 60})


def test_a_single_server_database_is_not_silently_reused_by_a_cluster(clickhouse_cluster_url: str,
                                                                     made: ClusterStore) -> None:
    """Switching HOSTATLAS_CLICKHOUSE_CLUSTER on (or off) over an existing database must fail loudly."""
    database = f"hostatlas_test_{uuid.uuid4().hex[:10]}"
    url = urlunsplit(urlsplit(clickhouse_cluster_url)._replace(path=f"/{database}"))
    single = ClickHouseStore(url)
    try:
        single.migrate()
        with pytest.raises(ValueError, match="made for one server"):
            ClickHouseStore(url, cluster=CLICKHOUSE_CLUSTER).migrate()
    finally:
        single.close()
        admin = Client.from_url(clickhouse_cluster_url)
        admin.execute(f"DROP DATABASE IF EXISTS `{database}`")
        admin.disconnect()
    with pytest.raises(ValueError, match="made for a cluster"):
        ClickHouseStore(made.url).migrate()
