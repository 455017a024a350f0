"""scripts/clickhouse-cluster and the cluster deploy/clickhouse/config.d defines, on real servers.

The shared cluster (shard 1 at the `clickhouse_cluster_url` fixture) is only read and given private databases; the
stop/start test runs a second cluster of its own, on other ports and in a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_driver import Client

from tests.engines import pick_cluster_ports
from tests.support import CLICKHOUSE_CLUSTER, CLICKHOUSE_MIRROR_CLUSTER, wait_until

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "clickhouse-cluster"
ON_CLUSTER = {"distributed_ddl_task_timeout": 60}


def shard_ports(client: Client, cluster: str = CLICKHOUSE_CLUSTER) -> list[int]:
    """The native ports of the cluster's servers, shard by shard (all on loopback here)."""
    rows = client.execute(
        "SELECT shard_num, replica_num, host_address, port FROM system.clusters WHERE cluster = %(cluster)s"
        " ORDER BY shard_num, replica_num", {"cluster": cluster})
    assert {row[2] for row in rows} == {"127.0.0.1"}, rows
    return [int(row[3]) for row in rows]


def count_on(port: int, query: str) -> int:
    client = Client("127.0.0.1", port=port)
    try:
        return int(client.execute(query)[0][0])
    finally:
        client.disconnect()


def make_sharded_table(client: Client, database: str) -> None:
    """A MergeTree table on every server and a Distributed table over it that sends even x to shard 1."""
    client.execute(f"CREATE TABLE {database}.points_local ON CLUSTER {CLICKHOUSE_CLUSTER} (x UInt64)"
                   " ENGINE = MergeTree ORDER BY x", settings=ON_CLUSTER)
    client.execute(f"CREATE TABLE {database}.points ON CLUSTER {CLICKHOUSE_CLUSTER} (x UInt64)"
                   f" ENGINE = Distributed({CLICKHOUSE_CLUSTER}, {database}, points_local, x)", settings=ON_CLUSTER)


def test_both_servers_answer_and_know_both_clusters(clickhouse_cluster_url: str) -> None:
    client = Client.from_url(clickhouse_cluster_url)
    try:
        ports = shard_ports(client)
        mirror_ports = shard_ports(client, CLICKHOUSE_MIRROR_CLUSTER)
        mirror_shards = client.execute("SELECT DISTINCT shard_num FROM system.clusters WHERE cluster = %(cluster)s",
                                       {"cluster": CLICKHOUSE_MIRROR_CLUSTER})
    finally:
        client.disconnect()
    assert len(ports) == 2 and ports[0] != ports[1]
    # The mirror is the same two servers as one shard of two replicas.
    assert mirror_ports == ports and mirror_shards == [(1,)]
    for shard, port in enumerate(ports, start=1):
        server = Client("127.0.0.1", port=port)
        try:
            macros = dict(server.execute("SELECT macro, substitution FROM system.macros"))
            shards_seen = server.execute(
                "SELECT count() FROM system.clusters WHERE cluster = %(cluster)s", {"cluster": CLICKHOUSE_CLUSTER})
        finally:
            server.disconnect()
        # Each server was told by the environment which shard and replica it is (from_env in config.d).
        assert macros == {"shard": f"0{shard}", "replica": f"r{shard}"}
        assert shards_seen == [(2,)]


def test_a_distributed_insert_lands_rows_on_both_shards(clickhouse_cluster_db_url: str) -> None:
    database = clickhouse_cluster_db_url.rsplit("/", 1)[1]
    client = Client.from_url(clickhouse_cluster_db_url)
    try:
        ports = shard_ports(client)
        make_sharded_table(client, database)
        client.execute(f"INSERT INTO {database}.points (x) VALUES", [(x,) for x in range(1000)],
                       settings={"insert_distributed_sync": 1})
        total = client.execute(f"SELECT count() FROM {database}.points")
    finally:
        client.disconnect()
    # Synchronous: the rows are on the shards when the INSERT returns, split by the sharding key x.
    per_shard = [count_on(port, f"SELECT count() FROM {database}.points_local") for port in ports]
    assert per_shard == [500, 500]
    assert count_on(ports[0], f"SELECT count() FROM {database}.points_local WHERE x % 2 = 0") == 500
    assert total == [(1000,)]


def test_the_mirror_cluster_replicates_between_the_servers(clickhouse_cluster_db_url: str) -> None:
    database = clickhouse_cluster_db_url.rsplit("/", 1)[1]
    client = Client.from_url(clickhouse_cluster_db_url)
    try:
        ports = shard_ports(client, CLICKHOUSE_MIRROR_CLUSTER)
        # A fixed ZooKeeper path (no {shard} macro): both servers are replicas of this one table.
        client.execute(f"CREATE TABLE {database}.mirrored ON CLUSTER {CLICKHOUSE_MIRROR_CLUSTER} (x UInt64)"
                       f" ENGINE = ReplicatedMergeTree('/clickhouse/tables/{database}/mirrored', '{{replica}}')"
                       " ORDER BY x", settings=ON_CLUSTER)
        client.execute(f"INSERT INTO {database}.mirrored (x) VALUES", [(x,) for x in range(100)])
    finally:
        client.disconnect()
    # The second server fetches the part over its interserver port.
    wait_until(lambda: count_on(ports[1], f"SELECT count() FROM {database}.mirrored") == 100, timeout=30,
               what="the part to reach the second replica")


# --- a private cluster, stopped and started again --------------------------------------------------------------

def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


class PrivateCluster:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.base, self.zookeeper_port = pick_cluster_ports()
        self.ports = [self.base + 1, self.base + 2]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CLICKHOUSE_CLUSTER_DIR": str(self.directory),
               "CLICKHOUSE_CLUSTER_PORT_BASE": str(self.base), "CLICKHOUSE_CLUSTER_ZK_PORT": str(self.zookeeper_port)}
        return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120, check=False)

    def pids(self) -> list[str]:
        files = [self.directory / "zookeeper" / "zookeeper.pid",
                 *(self.directory / f"shard{n}" / "clickhouse.pid" for n in (1, 2))]
        return [file.read_text().strip() for file in files]


@pytest.fixture
def private_cluster(clickhouse_cluster_url: str, tmp_path: Path) -> Iterator[PrivateCluster]:
    """A cluster of its own (the shared one proves the packages are installed); always stopped and removed."""
    cluster = PrivateCluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        stopped = cluster.run("stop")
        shutil.rmtree(cluster.directory, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr


def test_a_private_cluster_keeps_its_data_across_a_clickhouse_restart(private_cluster: PrivateCluster) -> None:
    began = time.monotonic()
    started = private_cluster.run("start")
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip().splitlines()[-1]
    assert url == f"clickhouse://127.0.0.1:{private_cluster.ports[0]}/default"
    pids = private_cluster.pids()

    again = private_cluster.run("start")  # idempotent: prints the URL, starts nothing
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == url
    assert private_cluster.pids() == pids

    client = Client.from_url(url)
    try:
        client.execute(f"CREATE DATABASE kept ON CLUSTER {CLICKHOUSE_CLUSTER}", settings=ON_CLUSTER)
        make_sharded_table(client, "kept")
        client.execute("INSERT INTO kept.points (x) VALUES", [(x,) for x in range(10)],
                       settings={"insert_distributed_sync": 1})
    finally:
        client.disconnect()

    stopped = private_cluster.run("stop-clickhouse")
    assert stopped.returncode == 0, stopped.stderr
    assert all(_refuses(port) for port in private_cluster.ports)
    status = private_cluster.run("status")
    assert status.returncode == 1
    assert "zookeeper" in status.stdout and f"{private_cluster.zookeeper_port} answers" in status.stdout
    assert status.stdout.count(" down") == 2

    restarted = private_cluster.run("start-clickhouse")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.strip().splitlines()[-1] == url
    # ZooKeeper kept running; the servers are new processes with the data they had.
    assert private_cluster.pids()[0] == pids[0] and private_cluster.pids()[1:] != pids[1:]
    assert [count_on(port, "SELECT count() FROM kept.points_local") for port in private_cluster.ports] == [5, 5]
    assert count_on(private_cluster.ports[1], "SELECT sum(x) FROM kept.points") == sum(range(10))

    assert private_cluster.run("stop").returncode == 0
    assert all(_refuses(port) for port in (*private_cluster.ports, private_cluster.zookeeper_port))
    assert time.monotonic() - began < 60, "the cluster script has become slow"
