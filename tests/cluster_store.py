"""A telemetry store on the two-shard test cluster, made once per test module and emptied before each test.

ON CLUSTER DDL goes through ZooKeeper and takes about 0.3 s a statement, so a fresh database per test (20
statements) would cost the contract suites minutes. Emptying the shards' local tables directly, without
ON CLUSTER, takes milliseconds and leaves what each test must see: a migrated, empty store.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from clickhouse_driver import Client  # type: ignore[import-untyped]

from hostatlas.telemetry.storage.clickhouse import ClickHouseStore
from tests.support import CLICKHOUSE_CLUSTER

_ON_CLUSTER = {"distributed_ddl_task_timeout": 60}


def shard_urls(cluster_url: str, cluster: str = CLICKHOUSE_CLUSTER) -> list[str]:
    """The native URL of every server of ``cluster``, as the server at ``cluster_url`` knows them."""
    client = Client.from_url(cluster_url)
    try:
        rows = client.execute("SELECT host_address, port FROM system.clusters WHERE cluster = %(c)s"
                              " ORDER BY shard_num, replica_num", {"c": cluster})
    finally:
        client.disconnect()
    return [f"clickhouse://{host}:{port}/default" for host, port in rows]


class ClusterStore:
    """One migrated database on the cluster; ``empty()`` truncates every local table on every shard."""

    def __init__(self, cluster_url: str) -> None:
        self.database = f"hostatlas_test_{uuid.uuid4().hex[:10]}"
        self.url = urlunsplit(urlsplit(cluster_url)._replace(path=f"/{self.database}"))
        self._shards = [Client.from_url(url) for url in shard_urls(cluster_url)]

    def open(self) -> ClickHouseStore:
        return ClickHouseStore(self.url, cluster=CLICKHOUSE_CLUSTER)

    def empty(self) -> None:
        for shard in self._shards:
            tables = shard.execute(
                "SELECT name FROM system.tables WHERE database = %(d)s AND engine LIKE '%%MergeTree'",
                {"d": self.database})
            for (table,) in tables:
                shard.execute(f"TRUNCATE TABLE `{self.database}`.`{table}`")

    def drop(self) -> None:
        self._shards[0].execute(f"DROP DATABASE IF EXISTS `{self.database}` ON CLUSTER {CLICKHOUSE_CLUSTER}",
                                settings=_ON_CLUSTER)
        for shard in self._shards:
            shard.disconnect()


@contextmanager
def cluster_store(cluster_url: str) -> Iterator[ClusterStore]:
    made = ClusterStore(cluster_url)
    store = made.open()
    store.migrate()
    store.close()
    try:
        yield made
    finally:
        made.drop()
