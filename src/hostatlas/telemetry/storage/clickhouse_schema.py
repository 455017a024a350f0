"""The ClickHouse store's tables, on one server or on a cluster, and the DDL that makes them.

On one server each table is a plain MergeTree. With a cluster (``HOSTATLAS_CLICKHOUSE_CLUSTER``) every
statement runs ``ON CLUSTER``: each shard keeps the rows in ``<table>_local``, and ``<table>`` is a
``Distributed`` table over them, sharded by server, through which the store reads and writes. Sharding by
server keeps each host's series, and so each rollup bucket, on one shard, so ``-Merge`` answers stay exact.
The materialized views live on each shard and read its local raw table, so a point reaches every tier of
the shard that stores it. With ``replicated`` the local tables are ``Replicated*MergeTree`` under a
ZooKeeper (or ClickHouse Keeper) path whose ``{shard}`` and ``{replica}`` macros each server defines.

Everything here also parses on Debian's ClickHouse 18.16 (see clickhouse.py for what that rules out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hostatlas.telemetry.storage.contract import TIER_SECONDS, Tier

DAY = 86_400
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"


@dataclass(frozen=True)
class Table:
    name: str
    time_column: str
    # Partitions span whole multiples of this many seconds since the epoch (UTC days, not the server's
    # time zone), so retention can tell from a partition's number alone whether it is entirely too old.
    partition_seconds: int


RAW = Table("metrics_raw", "ts", DAY)
ROLLUPS = {Tier.MINUTE: Table("metrics_1m", "bucket", DAY), Tier.HOUR: Table("metrics_1h", "bucket", 30 * DAY)}
LOGS = Table("logs", "ts", DAY)
# The raw points again, ordered by (team, metric, time) for alert windows: the raw table's series-first order
# makes "this metric, every server, the last 5 minutes" read the whole team's day.
RECENT = Table("metrics_recent", "ts", DAY)
ALL_TABLES = (RAW, *ROLLUPS.values(), RECENT, LOGS)

SERIES_KEY = "team_id, server_id, metric, labels"
# Where a row lives in a cluster: by server, so a host's series and rollup buckets never straddle shards.
SHARDING_KEY = "intHash64(server_id)"
LOG_INDEX = ", INDEX line_tokens lowerUTF8(line) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 4"


@dataclass(frozen=True)
class Layout:
    """Where the store's tables are and how they are made: one database, maybe spread over a cluster."""

    database: str
    cluster: str | None = None
    replicated: bool = False
    replica_path: str = DEFAULT_REPLICA_PATH

    def __post_init__(self) -> None:
        if not IDENTIFIER.match(self.database):
            raise ValueError(f"unsupported ClickHouse database name {self.database!r}")
        if self.cluster is not None and not IDENTIFIER.match(self.cluster):
            raise ValueError(f"unsupported ClickHouse cluster name {self.cluster!r}")
        if "'" in self.replica_path or "\\" in self.replica_path:
            raise ValueError("the replica path may not contain quotes or backslashes")

    @property
    def db(self) -> str:
        return f"`{self.database}`"

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER `{self.cluster}`" if self.cluster else ""

    def stored(self, table: Table) -> str:
        """The table that holds the rows on a server: ``<name>_local`` on a cluster's shards."""
        return f"{table.name}_local" if self.cluster else table.name

    def parts_source(self) -> str:
        """Where every shard's ``system.parts`` (or, with another table, ``system.mutations``) can be read."""
        return f"cluster('{self.cluster}', system, {{}})" if self.cluster else "system.{}"

    def _engine(self, kind: str, table: Table) -> str:
        if not self.replicated:
            return kind
        # {database} and {table} are filled in here; {shard} and {replica} are the servers' own macros.
        path = self.replica_path.replace("{database}", self.database).replace("{table}", self.stored(table))
        return f"Replicated{kind}('{path}', '{{replica}}')"

    def expected_tables(self) -> set[str]:
        """Every table and view migrate() makes on each server: when all exist, there is nothing to do."""
        names = {self.stored(table) for table in ALL_TABLES}
        names |= {f"{table.name}_mv" for table in (*ROLLUPS.values(), RECENT)}
        if self.cluster:
            names |= {table.name for table in ALL_TABLES}
        return names

    # -- DDL, in the order migrate() runs it --

    def statements(self, *, logs_index: str) -> list[str]:
        """Every CREATE, each IF NOT EXISTS, in an order where what a view or a Distributed table names exists."""
        raw, recent = self.stored(RAW), self.stored(RECENT)
        statements = [self._create(RAW, f"""(
            team_id UInt32, server_id UInt32, metric String, labels String, ts UInt32, value Float64
        ) ENGINE = {self._engine("MergeTree", RAW)} PARTITION BY intDiv(ts, {RAW.partition_seconds})
        ORDER BY ({SERIES_KEY}, ts)""")]
        for tier, table in ROLLUPS.items():
            seconds = TIER_SECONDS[tier]
            statements.append(self._create(table, f"""(
                team_id UInt32, server_id UInt32, metric String, labels String, bucket UInt32,
                min_v AggregateFunction(min, Float64),
                max_v AggregateFunction(max, Float64),
                sum_v AggregateFunction(sum, Float64),
                count_v AggregateFunction(count),
                last_v AggregateFunction(argMax, Float64, UInt32),
                last_ts AggregateFunction(max, UInt32)
            ) ENGINE = {self._engine("AggregatingMergeTree", table)}
            PARTITION BY intDiv(bucket, {table.partition_seconds}) ORDER BY ({SERIES_KEY}, bucket)"""))
            statements.append(self._view(f"{table.name}_mv", self.stored(table), f"""
                SELECT {SERIES_KEY}, toUInt32(intDiv(ts, {seconds}) * {seconds}) AS bucket,
                    minState(value) AS min_v, maxState(value) AS max_v, sumState(value) AS sum_v,
                    countState() AS count_v, argMaxState(value, ts) AS last_v, maxState(ts) AS last_ts
                FROM {self.db}.{raw} GROUP BY {SERIES_KEY}, bucket"""))
        # Filled from its creation on: on an upgraded install, windows reaching back before it see only
        # the points since (a 5-minute rule sees whole windows 5 minutes after the upgrade).
        statements.append(self._create(RECENT, f"""(
            team_id UInt32, metric String, ts UInt32, server_id UInt32, labels String, value Float64
        ) ENGINE = {self._engine("MergeTree", RECENT)} PARTITION BY intDiv(ts, {RECENT.partition_seconds})
        ORDER BY (team_id, metric, ts)"""))
        statements.append(self._view(f"{RECENT.name}_mv", recent, f"""
            SELECT team_id, metric, ts, server_id, labels, value FROM {self.db}.{raw}"""))
        statements.append(self.logs_statement(logs_index))
        return statements

    def logs_statement(self, index: str) -> str:
        return self._create(LOGS, f"""(
            id UInt64, team_id UInt32, server_id UInt32, ts Float64,
            source String, level String, message String, fields String, line String{index}
        ) ENGINE = {self._engine("MergeTree", LOGS)} PARTITION BY intDiv(toUInt32(ts), {LOGS.partition_seconds})
        ORDER BY (team_id, server_id, ts, id)""")

    def distributed_statements(self) -> list[str]:
        """The Distributed table over each local one, under the name the queries use; none on one server."""
        if not self.cluster:
            return []
        return [
            f"CREATE TABLE IF NOT EXISTS {self.db}.{table.name}{self.on_cluster} AS {self.db}.{self.stored(table)}"
            f" ENGINE = Distributed(`{self.cluster}`, {self.db}, {self.stored(table)}, {SHARDING_KEY})"
            for table in ALL_TABLES
        ]

    def _create(self, table: Table, body: str) -> str:
        return f"CREATE TABLE IF NOT EXISTS {self.db}.{self.stored(table)}{self.on_cluster} {body}"

    def _view(self, name: str, target: str, select: str) -> str:
        return (f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.db}.{name}{self.on_cluster}"
                f" TO {self.db}.{target} AS {select}")
