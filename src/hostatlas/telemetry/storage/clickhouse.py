"""The ClickHouse telemetry store, for installs whose metrics and logs outgrow the embedded one.

The SQL runs on Debian's ClickHouse 18.16 as well as on current releases, so it avoids what 18.16 lacks:
TTL (retention drops day partitions, then deletes what is left before the cutoff), server-side query
parameters (clickhouse-driver substitutes ``%(name)s`` values, escaped, on the client), hasToken and
data-skipping indexes (used only where the server has them), SimpleAggregateFunction and LowCardinality.

Rollups are AggregatingMergeTree tables that materialized views fill from every INSERT into the raw
table, so a point is in every tier once ``insert_metrics`` returns. They keep aggregate states, and
``-Merge`` over any set of buckets is exact for every ``Agg``, whatever the query's step.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import groupby
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from clickhouse_driver import Client  # type: ignore[import-untyped]

from hostatlas.clock import now_unix
from hostatlas.telemetry.storage.clickhouse_schema import (
    DAY,
    DEFAULT_REPLICA_PATH,
    LOG_INDEX,
    LOGS,
    RAW,
    RECENT,
    ROLLUPS,
    Layout,
    Table,
)
from hostatlas.telemetry.storage.contract import (
    TIER_SECONDS,
    Agg,
    LogQuery,
    LogRecord,
    MetricPoint,
    Retention,
    Series,
    SeriesQuery,
    StoredLog,
    Tier,
    WindowQuery,
    WindowValue,
)

_MUTATION_TIMEOUT = 600.0
# Windows starting less than RECENT_SECONDS ago read the (team, metric, ts)-ordered copy of the raw points; it
# keeps twice that (never more than the raw tier) so the clocks of the process that trims and the one that
# reads may differ by a day.
RECENT_SECONDS = DAY
_RECENT_KEEP = 2 * DAY
_SERVERS_IN_SQL = 500

_METRIC_COLUMNS = "team_id, server_id, metric, labels, ts, value"
_LOG_COLUMNS = "id, team_id, server_id, ts, source, level, message, fields, line"

_RAW_AGGS = {
    Agg.AVG: "avg(value)",
    Agg.MIN: "min(value)",
    Agg.MAX: "max(value)",
    Agg.SUM: "sum(value)",
    Agg.COUNT: "count()",
    Agg.LAST: "argMax(value, ts)",
}
_COMPARISONS = {">": ">", ">=": ">=", "<": "<", "<=": "<=", "==": "=", "!=": "!="}
_ROLLUP_AGGS = {
    Agg.AVG: "sumMerge(sum_v) / countMerge(count_v)",
    Agg.MIN: "minMerge(min_v)",
    Agg.MAX: "maxMerge(max_v)",
    Agg.SUM: "sumMerge(sum_v)",
    Agg.COUNT: "countMerge(count_v)",
    Agg.LAST: "argMaxMerge(last_v)",
}

# hasToken's notion of a word, which the regex fallback copies so that both paths find the same lines:
# runs of ASCII letters and digits plus any non-ASCII character; every other ASCII character separates.
_SEPARATOR = r"[^0-9a-z\x{80}-\x{10ffff}]"


class _LogIds:
    """Log ids that any number of writer processes mint without coordinating or reading the table first.

    The current millisecond fills the high bits, so ids grow with time; a random offset below it keeps
    two processes apart within one millisecond; and within this process ids never repeat, however many
    batches a millisecond sees. Ids only break ties between lines with the same ``ts`` of one server,
    so this is unique enough. They fit in 63 bits until the year 2109.
    """

    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def take(self, count: int) -> range:
        with self._lock:
            first = max(self._next, (int(now_unix() * 1000) << 21) + secrets.randbits(20))
            self._next = first + count
        return range(first, first + count)


_log_ids = _LogIds()


def new_log_ids(count: int) -> list[int]:
    return list(_log_ids.take(count))


def _is_token_char(char: str) -> bool:
    return not char.isascii() or char.isalnum()


def _word_pattern(word: str) -> str:
    """A regex finding ``word`` (lower case) as a whole word in a lower-cased line.

    The boundary is only required next to letters and digits: ``/var/log`` or ``-v`` are found wherever
    they stand, as a plain ``\\b`` would not do before a leading slash or dash.
    """
    lead = f"(^|{_SEPARATOR})" if _is_token_char(word[0]) else ""
    tail = f"({_SEPARATOR}|$)" if _is_token_char(word[-1]) else ""
    return lead + re.escape(word) + tail


def _no_server(query: LogQuery) -> bool:
    """An empty server list (not a missing one) matches nothing; `IN ()` would not even parse."""
    return query.server_ids is not None and len(query.server_ids) == 0


def _log_filters(query: LogQuery, params: dict[str, Any]) -> list[str]:
    # Empty levels or source mean no filter, as in the embedded store.
    conditions = []
    if query.server_ids is not None:
        params["server_ids"] = tuple(query.server_ids)
        conditions.append("server_id IN %(server_ids)s")
    if query.levels:
        params["levels"] = tuple(query.levels)
        conditions.append("level IN %(levels)s")
    if query.source:
        params["source"] = query.source
        conditions.append("source = %(source)s")
    if query.start is not None:
        params["start"] = float(query.start)
        conditions.append("ts >= %(start)s")
    if query.end is not None:
        params["end"] = float(query.end)
        conditions.append("ts < %(end)s")
    return conditions


class _Pool:
    """Connections for any number of threads: a clickhouse-driver Client serves one query at a time."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    @contextmanager
    def client(self) -> Iterator[Any]:
        with self._lock:
            client = self._idle.pop() if self._idle else Client.from_url(self._url)
        try:
            yield client
        except BaseException:
            # A query cut short may leave unread packets on the socket: never hand it out again.
            client.disconnect()
            raise
        with self._lock:
            self._idle.append(client)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            client.disconnect()


class ClickHouseStore:
    """``TelemetryStore`` on ClickHouse; ``url`` is like ``clickhouse://host:9000/hostatlas``.

    With ``cluster`` (a name from the servers' ``remote_servers``) the tables are made ``ON CLUSTER`` and
    spread over its shards (clickhouse_schema.py); ``url`` may then name any of its servers.
    """

    def __init__(self, url: str, *, cluster: str | None = None, replicated: bool = False,
                 replica_path: str = DEFAULT_REPLICA_PATH) -> None:
        parts = urlsplit(url)
        self._layout = Layout(parts.path.strip("/") or "default", cluster or None, replicated, replica_path)
        self._db = self._layout.db
        # The target database may not exist yet: migrate() connects through `default` to create it.
        self._bootstrap_url = urlunsplit(parts._replace(path="/default"))
        self._pool = _Pool(url)
        self._has_token: bool | None = None
        # Through a Distributed table, an INSERT returns once every shard has its rows, not once they are
        # queued on this server for sending later: acknowledged means stored, as on one server.
        self._insert_settings = {"insert_distributed_sync": 1} if cluster else {}

    def _execute(self, sql: str, params: Any = None, **kwargs: Any) -> Any:
        with self._pool.client() as client:
            return client.execute(sql, params, **kwargs)

    # -- schema --

    def migrate(self) -> None:
        bootstrap = Client.from_url(self._bootstrap_url)
        try:
            bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {self._db}{self._layout.on_cluster}")
        finally:
            bootstrap.disconnect()
        if self._migrated_already():
            # Every process that opens the store migrates it (each node, its storer, each worker): on a cluster
            # that would be some 15 ON CLUSTER statements through ZooKeeper each time, so look first.
            return
        # A view needs its source table to exist, and a raw INSERT that finds no view is never folded in
        # later: migrate before the first write. The logs table is last: it may take several attempts.
        *tables, _ = self._layout.statements(logs_index="")
        for statement in tables:
            self._execute(statement)
        self._create_logs_table()
        for statement in self._layout.distributed_statements():
            self._execute(statement)

    def _migrated_already(self) -> bool:
        """Whether the tables are all there already. A database made for one server cannot become a cluster's,
        nor the reverse: IF NOT EXISTS would keep the old tables and leave the new local ones without views.
        Say so instead of storing nowhere."""
        engines = dict(self._execute("SELECT name, engine FROM system.tables WHERE database = %(database)s",
                                     {"database": self._layout.database}))
        if RAW.name in engines and (engines[RAW.name] == "Distributed") != bool(self._layout.cluster):
            made_for = "a cluster" if engines[RAW.name] == "Distributed" else "one server"
            raise ValueError(f"ClickHouse database {self._layout.database!r} was made for {made_for}; "
                             "use another database for this layout (docs/deploy.md)")
        return self._layout.expected_tables() <= engines.keys()

    def _create_logs_table(self) -> None:
        """With a token bloom filter index where the server has them; 18.16 cannot even parse one.

        Some releases want the index behind an experimental setting that others no longer know, so try
        both; the last attempt, without the index, raises the error if the table cannot be made at all.
        """
        attempts: list[tuple[str, dict[str, int]]] = [
            (LOG_INDEX, {"allow_experimental_data_skipping_indices": 1}),
            (LOG_INDEX, {}),
        ]
        for index, settings in attempts:
            try:
                self._execute(self._layout.logs_statement(index), settings=settings)
                return
            except Exception:  # the next, plainer attempt follows
                continue
        self._execute(self._layout.logs_statement(""))

    # -- writes --

    def ping(self) -> None:
        # On a cluster, every shard must answer: a write to the Distributed tables needs them all.
        self._execute(f"SELECT count() FROM {self._layout.parts_source().format('one')}")

    def insert_metrics(self, points: Sequence[MetricPoint]) -> None:
        if not points:
            return
        columns: list[list[Any]] = [
            [p.team_id for p in points],
            [p.server_id for p in points],
            [p.metric for p in points],
            [p.labels for p in points],
            [p.ts for p in points],
            [p.value for p in points],
        ]
        self._insert(RAW.name, _METRIC_COLUMNS, columns)

    def insert_logs(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        columns: list[list[Any]] = [
            new_log_ids(len(records)),
            [r.team_id for r in records],
            [r.server_id for r in records],
            [r.ts for r in records],
            [r.source for r in records],
            [r.level for r in records],
            [r.message for r in records],
            [r.fields for r in records],
            [r.line for r in records],
        ]
        self._insert(LOGS.name, _LOG_COLUMNS, columns)

    def _insert(self, table: str, names: str, columns: list[list[Any]]) -> None:
        # One INSERT per call: ClickHouse makes a part per INSERT and partition, so batches must stay big.
        sql = f"INSERT INTO {self._db}.{table} ({names}) VALUES"
        self._execute(sql, columns, columnar=True, types_check=False, settings=self._insert_settings)

    # -- metric reads --

    def query_series(self, query: SeriesQuery) -> list[Series]:
        bucket = TIER_SECONDS[query.tier]
        if query.step <= 0 or query.step % bucket:
            raise ValueError(f"step {query.step} is not a multiple of the {query.tier} tier's {bucket} s")
        if not query.server_ids:
            return []
        if query.tier == Tier.RAW:
            table, aggregate = RAW, _RAW_AGGS[query.agg]
        else:
            table, aggregate = ROLLUPS[query.tier], _ROLLUP_AGGS[query.agg]
        params: dict[str, Any] = {
            "team_id": query.team_id,
            "server_ids": tuple(query.server_ids),
            "metric": query.metric,
            "start": query.start,
            "end": query.end,
            "step": query.step,
        }
        column = table.time_column
        sql = f"""SELECT server_id, labels, toUInt32(intDiv({column}, %(step)s) * %(step)s) AS point, {aggregate}
            FROM {self._db}.{table.name}
            WHERE team_id = %(team_id)s AND server_id IN %(server_ids)s AND metric = %(metric)s
              AND {column} >= %(start)s AND {column} < %(end)s{self._label_conditions(query, params)}
            GROUP BY server_id, labels, point
            ORDER BY server_id, labels, point"""
        rows = self._execute(sql, params)
        return [
            Series(server_id, query.metric, labels, [(point, float(value)) for _, _, point, value in group])
            for (server_id, labels), group in groupby(rows, key=lambda row: (row[0], row[1]))
        ]

    def aggregate_window(self, query: WindowQuery) -> list[WindowValue]:
        if query.server_ids is not None and not query.server_ids:
            return []
        params: dict[str, Any] = {"team_id": query.team_id, "metric": query.metric, "start": query.start,
                                  "end": query.end}
        servers, wanted = "", None
        if query.server_ids is not None and len(query.server_ids) > _SERVERS_IN_SQL:
            # Thousands of ids inlined in the SQL cost more to send and parse than the team's whole window of
            # this metric costs to read: that is read, and the rows of other servers dropped here.
            wanted = frozenset(query.server_ids)
        elif query.server_ids is not None:
            params["server_ids"] = tuple(query.server_ids)
            servers = " AND server_id IN %(server_ids)s"
        # A recent window reads the (team, metric, ts)-ordered copy: only the granules of the window. One
        # GROUP BY answers for every server at once.
        table = RECENT if query.start >= now_unix() - RECENT_SECONDS else RAW
        sql = f"""SELECT server_id, labels, {_RAW_AGGS[query.agg]} AS v
            FROM {self._db}.{table.name}
            PREWHERE team_id = %(team_id)s AND metric = %(metric)s AND ts >= %(start)s AND ts < %(end)s{servers}
            WHERE 1{self._label_conditions(query, params)}
            GROUP BY server_id, labels"""
        if query.only is not None:
            # Filtered here, not in Python: a fleet that is fine sends back (and costs the client) almost nothing.
            sql = f"SELECT server_id, labels, v FROM ({sql}) WHERE v {_COMPARISONS[query.only.operator]} %(threshold)s"
            params["threshold"] = query.only.threshold
            if query.only.keep:
                sql += " OR server_id IN %(keep)s"
                params["keep"] = tuple(query.only.keep)
        return [WindowValue(server_id, labels, float(value))
                for server_id, labels, value in self._execute(sql + " ORDER BY server_id, labels", params)
                if wanted is None or server_id in wanted]

    @staticmethod
    def _label_conditions(query: SeriesQuery | WindowQuery, params: dict[str, Any]) -> str:
        # A whole `k=v` element of the canonical string: `mount=/` must not match `mount=/boot`.
        sql = ""
        for number, (key, value) in enumerate(sorted(query.label_filters.items())):
            params[f"label_{number}"] = f"{key}={value}"
            sql += f" AND has(splitByChar(',', labels), %(label_{number})s)"
        return sql

    def metric_names(self, team_id: int, server_id: int) -> list[tuple[str, str]]:
        # Every tier, since each keeps its own retention and may outlive the others.
        tables = [RAW, *ROLLUPS.values()]
        union = " UNION ALL ".join(
            f"SELECT DISTINCT metric, labels FROM {self._db}.{table.name} "
            "WHERE team_id = %(team_id)s AND server_id = %(server_id)s"
            for table in tables
        )
        sql = f"SELECT DISTINCT metric, labels FROM ({union}) ORDER BY metric, labels"
        rows = self._execute(sql, {"team_id": team_id, "server_id": server_id})
        return [(metric, labels) for metric, labels in rows]

    # -- log reads --

    def query_logs(self, query: LogQuery) -> list[StoredLog]:
        if query.limit <= 0 or _no_server(query):
            return []
        params: dict[str, Any] = {"team_id": query.team_id, "limit": query.limit}
        where = self._log_where(query, params, paged=True)
        sql = f"""SELECT id, server_id, ts, source, level, message, fields, line
            FROM {self._db}.{LOGS.name} WHERE {where}
            ORDER BY ts DESC, id DESC LIMIT %(limit)s"""
        return [StoredLog(*row) for row in self._execute(sql, params)]

    def count_logs(self, query: LogQuery) -> int:
        if _no_server(query):
            return 0
        params: dict[str, Any] = {"team_id": query.team_id}
        where = self._log_where(query, params, paged=False)
        return int(self._execute(f"SELECT count() FROM {self._db}.{LOGS.name} WHERE {where}", params)[0][0])

    def _log_where(self, query: LogQuery, params: dict[str, Any], *, paged: bool) -> str:
        conditions = ["team_id = %(team_id)s", *_log_filters(query, params), *self._text_filters(query, params)]
        if paged and query.before is not None:
            params["before_ts"], params["before_id"] = float(query.before[0]), int(query.before[1])
            conditions.append("(ts < %(before_ts)s OR (ts = %(before_ts)s AND id < %(before_id)s))")
        return " AND ".join(conditions)

    def _text_filters(self, query: LogQuery, params: dict[str, Any]) -> list[str]:
        conditions = []
        for number, word in enumerate((query.text or "").lower().split()):
            name = f"word_{number}"
            if all(map(_is_token_char, word)) and self._server_has_token():
                # The same test as the regex below, but one that the token bloom filter index can serve.
                params[name] = word
                conditions.append(f"hasToken(lowerUTF8(line), %({name})s)")
            else:
                params[name] = _word_pattern(word)
                conditions.append(f"match(lowerUTF8(line), %({name})s)")
        return conditions

    def _server_has_token(self) -> bool:
        if self._has_token is None:
            rows = self._execute("SELECT count() FROM system.functions WHERE name = 'hasToken'")
            self._has_token = bool(rows[0][0])
        return self._has_token

    # -- retention --

    def enforce_retention(self, retention: Retention, now: int) -> dict[str, int]:
        """Rows removed per table: `metrics_raw`, `metrics_1m`, `metrics_1h` and `logs`.

        Rollup rows go by their bucket's start, like raw points by their timestamp: whatever starts
        before ``now - retention`` goes. Counts are physical rows, which for rollups may include
        bucket states that ClickHouse had not merged yet.
        """
        plan = [
            (RAW, retention.raw_seconds),
            (ROLLUPS[Tier.MINUTE], retention.minute_seconds),
            (ROLLUPS[Tier.HOUR], retention.hour_seconds),
            (LOGS, retention.logs_seconds),
        ]
        removed = {table.name: self._expire(table, now - seconds) for table, seconds in plan}
        # Not reported: a copy of raw points. Whole old days go; when the raw tier keeps less than the copy
        # would, the copy is trimmed exactly like it, so a window reads the same points from either table.
        if retention.raw_seconds < _RECENT_KEEP:
            self._expire(RECENT, now - retention.raw_seconds)
        else:
            self._drop_old_partitions(RECENT, now - _RECENT_KEEP)
        return removed

    def _expire(self, table: Table, cutoff: int) -> int:
        removed = self._drop_old_partitions(table, cutoff)
        # 18.16 has no TTL: the partition holding the cutoff keeps older rows until a mutation rewrites
        # the parts that hold some (the others it only hard-links), which costs up to a day's partition.
        where = f"{table.time_column} < %(cutoff)s"
        leftover = self._execute(f"SELECT count() FROM {self._db}.{table.name} WHERE {where}", {"cutoff": cutoff})
        if leftover[0][0]:
            self._execute(f"ALTER TABLE {self._db}.{self._layout.stored(table)}{self._layout.on_cluster}"
                          f" DELETE WHERE {where}", {"cutoff": cutoff})
            self._wait_for_mutations(table)
        return int(removed + leftover[0][0])

    def _drop_old_partitions(self, table: Table, cutoff: int) -> int:
        """Drops every partition whose whole span lies before the cutoff, on every shard; returns the rows
        they held. (On a replicated cluster, the parts of one replica per shard are counted.)"""
        rows = self._execute(
            f"SELECT partition, sum(rows) FROM {self._layout.parts_source().format('parts')}"
            " WHERE database = %(database)s AND table = %(table)s AND active GROUP BY partition",
            {"database": self._layout.database, "table": self._layout.stored(table)},
        )
        removed = 0
        for partition, count in rows:
            if (int(partition) + 1) * table.partition_seconds <= cutoff:
                self._execute(f"ALTER TABLE {self._db}.{self._layout.stored(table)}{self._layout.on_cluster}"
                              " DROP PARTITION %(p)s", {"p": int(partition)})
                removed += count
        return removed

    def _wait_for_mutations(self, table: Table) -> None:
        # 18.16 runs mutations in the background and lacks mutations_sync: poll until every shard is done.
        deadline = time.monotonic() + _MUTATION_TIMEOUT
        sql = (
            f"SELECT count() FROM {self._layout.parts_source().format('mutations')}"
            " WHERE database = %(database)s AND table = %(table)s AND is_done = 0"
        )
        params = {"database": self._layout.database, "table": self._layout.stored(table)}
        while self._execute(sql, params)[0][0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ClickHouse did not finish deleting old rows of {table.name}")
            time.sleep(0.05)

    def close(self) -> None:
        self._pool.close()
