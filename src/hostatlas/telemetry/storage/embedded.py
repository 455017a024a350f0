"""The embedded telemetry store: SQLite in its own file (``<data_dir>/telemetry.db``), so ingestion never
queues behind the API's writes. Plain ``sqlite3`` rather than the ORM: this is the ingestion hot path.

Layout: a ``series`` table names each (team, server, metric, labels) once; raw points and the 1-minute
and 1-hour rollups refer to it by id. Rollups are folded in at insert time with UPSERTs, pre-aggregated
per batch. Logs sit in a table mirrored into an FTS5 index for word search.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from hostatlas.db.sqlite_wal import enable_wal
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
from hostatlas.telemetry.storage.series import label_pairs, matches_labels

SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, team_id INTEGER NOT NULL, server_id INTEGER NOT NULL,
    metric TEXT NOT NULL, labels TEXT NOT NULL, UNIQUE (team_id, server_id, metric, labels));
CREATE INDEX IF NOT EXISTS ix_series_team_metric ON series (team_id, metric);
CREATE TABLE IF NOT EXISTS metrics_raw (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ix_metrics_raw_series_ts ON metrics_raw (series_id, ts);
CREATE INDEX IF NOT EXISTS ix_metrics_raw_ts ON metrics_raw (ts);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY, team_id INTEGER NOT NULL, server_id INTEGER NOT NULL, ts REAL NOT NULL,
    source TEXT NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, fields TEXT NOT NULL, line TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_logs_team_ts ON logs (team_id, ts, id);
CREATE INDEX IF NOT EXISTS ix_logs_server_ts ON logs (server_id, ts, id);
CREATE VIRTUAL TABLE IF NOT EXISTS logs_fts USING fts5 (line, content='logs', content_rowid='id',
                                                        tokenize='unicode61 remove_diacritics 2');
"""
ROLLUP_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    series_id INTEGER NOT NULL, bucket INTEGER NOT NULL, min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL,
    count INTEGER NOT NULL, last REAL NOT NULL, last_ts INTEGER NOT NULL, PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_{table}_bucket ON {table} (bucket);
"""
ROLLUP_TABLES = {Tier.MINUTE: "metrics_1m", Tier.HOUR: "metrics_1h"}
UPSERT = """
INSERT INTO {table} (series_id, bucket, min, max, sum, count, last, last_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (series_id, bucket) DO UPDATE SET
    min = min(min, excluded.min), max = max(max, excluded.max), sum = sum + excluded.sum,
    count = count + excluded.count,
    last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END,
    last_ts = max(last_ts, excluded.last_ts)
"""
# SQLite returns the bare column `value`/`last` from the row holding max(ts): that row's value is "last".
RAW_AGG = {Agg.AVG: "avg(value)", Agg.MIN: "min(value)", Agg.MAX: "max(value)", Agg.SUM: "sum(value)",
           Agg.COUNT: "count(*)", Agg.LAST: "value, max(ts)"}
# The same, its value named v (last: SQLite's bare column is the value of the row holding max(ts)).
RAW_AGG_AS_V = {agg: f"{sql} AS v" for agg, sql in RAW_AGG.items()} | {Agg.LAST: "value AS v, max(ts) AS last_ts"}
SQL_COMPARISONS = {">": ">", ">=": ">=", "<": "<", "<=": "<=", "==": "=", "!=": "!="}
ROLLUP_AGG = {Agg.AVG: "sum(sum) * 1.0 / sum(count)", Agg.MIN: "min(min)", Agg.MAX: "max(max)",
              Agg.SUM: "sum(sum)", Agg.COUNT: "sum(count)", Agg.LAST: "last, max(last_ts)"}


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    enable_wal(connection)
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


class EmbeddedStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection writes (the writer thread, under the lock); each reading thread has its own.
        self._writer = _connect(path)
        self._write_lock = threading.Lock()
        self._readers = threading.local()
        self._series_ids: dict[tuple[int, int, str, str], int] = {}

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._readers, "connection", None)
        if connection is None:
            connection = _connect(self.path)
            self._readers.connection = connection
        return connection

    def migrate(self) -> None:
        with self._write_lock:
            self._writer.executescript(SCHEMA + "".join(ROLLUP_SCHEMA.format(table=t) for t in ROLLUP_TABLES.values()))

    # -- writing ---------------------------------------------------------------------------------------------

    def ping(self) -> None:
        # Taking the write lock is what an INSERT needs first (another process may hold it).
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            self._writer.execute("ROLLBACK")

    def _series_id(self, key: tuple[int, int, str, str]) -> int:
        known = self._series_ids.get(key)
        if known is not None:
            return known
        cursor = self._writer.execute(
            "INSERT INTO series (team_id, server_id, metric, labels) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET metric = excluded.metric RETURNING id", key)
        series_id = int(cursor.fetchone()[0])
        self._series_ids[key] = series_id
        return series_id

    def insert_metrics(self, points: Sequence[MetricPoint]) -> None:
        if not points:
            return
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                rows = [(self._series_id((p.team_id, p.server_id, p.metric, p.labels)), p.ts, p.value)
                        for p in points]
                self._writer.executemany("INSERT INTO metrics_raw (series_id, ts, value) VALUES (?, ?, ?)", rows)
                for tier, table in ROLLUP_TABLES.items():
                    self._writer.executemany(UPSERT.format(table=table), _fold(rows, TIER_SECONDS[tier]))
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                self._series_ids.clear()  # ids handed out in the rolled-back transaction are gone
                raise

    def insert_logs(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                first = self._writer.execute("SELECT coalesce(max(id), 0) + 1 FROM logs").fetchone()[0]
                rows = [(first + index, r.team_id, r.server_id, r.ts, r.source, r.level, r.message, r.fields, r.line)
                        for index, r in enumerate(records)]
                self._writer.executemany("INSERT INTO logs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._writer.executemany("INSERT INTO logs_fts (rowid, line) VALUES (?, ?)",
                                         [(row[0], row[8]) for row in rows])
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise

    # -- reading ---------------------------------------------------------------------------------------------

    def _series(self, query: SeriesQuery) -> dict[int, tuple[int, str]]:
        if not query.server_ids:
            return {}
        # The ids travel as one JSON parameter: thousands of bound `?` would hit SQLite's variable limit.
        rows = self._reader().execute(
            "SELECT id, server_id, labels FROM series WHERE team_id = ? AND metric = ? "
            "AND server_id IN (SELECT value FROM json_each(?))",
            (query.team_id, query.metric, json.dumps(list(query.server_ids))))
        return {sid: (server_id, labels) for sid, server_id, labels in rows
                if matches_labels(labels, query.label_filters)}

    def aggregate_window(self, query: WindowQuery) -> list[WindowValue]:
        if query.server_ids is not None and not query.server_ids:
            return []
        clauses = ["s.team_id = ?", "s.metric = ?"]
        params: list[object] = [query.team_id, query.metric]
        if query.server_ids is not None:
            clauses.append("s.server_id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(query.server_ids)))
        for key, value in sorted(query.label_filters.items()):
            # A whole `k=v` element of the canonical string (values hold no `,`): `mount=/` is not `mount=/boot`.
            clauses.append("instr(',' || s.labels || ',', ?) > 0")
            params.append(f",{key}={value},")
        # One statement for the whole fleet: the series index picks the team's series of the metric, and each
        # one's few window points come from the (series_id, ts) index.
        sql = (f"SELECT s.server_id AS server_id, s.labels AS labels, {RAW_AGG_AS_V[query.agg]} FROM series AS s "
               f"JOIN metrics_raw AS r ON r.series_id = s.id AND r.ts >= ? AND r.ts < ? "
               f"WHERE {' AND '.join(clauses)} GROUP BY s.id")
        sql, params = f"SELECT server_id, labels, v FROM ({sql})", [query.start, query.end, *params]
        if query.only is not None:
            sql += f" WHERE v {SQL_COMPARISONS[query.only.operator]} ?"
            params.append(query.only.threshold)
            if query.only.keep:
                sql += " OR server_id IN (SELECT value FROM json_each(?))"
                params.append(json.dumps(list(query.only.keep)))
        rows = self._reader().execute(sql + " ORDER BY server_id, labels", params)
        return [WindowValue(int(row[0]), row[1], float(row[2])) for row in rows]

    def query_series(self, query: SeriesQuery) -> list[Series]:
        found = self._series(query)
        if not found:
            return []
        marks = ",".join("?" * len(found))
        if query.tier is Tier.RAW:
            table, time_column, aggregate = "metrics_raw", "ts", RAW_AGG[query.agg]
        else:
            table, time_column, aggregate = ROLLUP_TABLES[query.tier], "bucket", ROLLUP_AGG[query.agg]
        sql = (f"SELECT series_id, ({time_column} / ?) * ? AS b, {aggregate} FROM {table} "
               f"WHERE series_id IN ({marks}) AND {time_column} >= ? AND {time_column} < ? "
               f"GROUP BY series_id, b ORDER BY series_id, b")
        by_series = {sid: Series(server_id, query.metric, labels) for sid, (server_id, labels) in found.items()}
        for row in self._reader().execute(sql, (query.step, query.step, *found, query.start, query.end)):
            by_series[row[0]].points.append((int(row[1]), float(row[2])))
        return [series for series in by_series.values() if series.points]

    def metric_names(self, team_id: int, server_id: int) -> list[tuple[str, str]]:
        return [(metric, labels) for metric, labels in self._reader().execute(
            "SELECT metric, labels FROM series WHERE team_id = ? AND server_id = ? ORDER BY metric, labels",
            (team_id, server_id))]

    def query_logs(self, query: LogQuery) -> list[StoredLog]:
        source, where, params = _log_filter(query, paged=True)
        sql = (f"SELECT l.id, l.server_id, l.ts, l.source, l.level, l.message, l.fields, l.line FROM {source} "
               f"WHERE {where} ORDER BY l.ts DESC, l.id DESC LIMIT ?")
        return [StoredLog(*row) for row in self._reader().execute(sql, (*params, query.limit))]

    def count_logs(self, query: LogQuery) -> int:
        source, where, params = _log_filter(query, paged=False)
        return int(self._reader().execute(f"SELECT count(*) FROM {source} WHERE {where}", params).fetchone()[0])

    # -- retention -------------------------------------------------------------------------------------------

    def enforce_retention(self, retention: Retention, now: int) -> dict[str, int]:
        removed: dict[str, int] = {}
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                removed["metrics_raw"] = self._delete("DELETE FROM metrics_raw WHERE ts < ?",
                                                      now - retention.raw_seconds)
                removed["metrics_1m"] = self._delete("DELETE FROM metrics_1m WHERE bucket < ?",
                                                     now - retention.minute_seconds)
                removed["metrics_1h"] = self._delete("DELETE FROM metrics_1h WHERE bucket < ?",
                                                     now - retention.hour_seconds)
                cutoff = now - retention.logs_seconds
                self._writer.execute("INSERT INTO logs_fts (logs_fts, rowid, line) "
                                     "SELECT 'delete', id, line FROM logs WHERE ts < ?", (cutoff,))
                removed["logs"] = self._delete("DELETE FROM logs WHERE ts < ?", cutoff)
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
        return removed

    def _delete(self, sql: str, cutoff: float) -> int:
        return int(self._writer.execute(sql, (cutoff,)).rowcount)

    def close(self) -> None:
        self._writer.close()


RollupRow = tuple[int, int, float, float, float, int, float, int]


def _fold(rows: Iterable[tuple[int, int, float]], width: int) -> list[RollupRow]:
    """Pre-aggregate a batch per (series, bucket), so each rollup row is upserted once per batch."""
    folded: dict[tuple[int, int], list[float]] = {}
    for series_id, ts, value in rows:
        key = (series_id, ts - ts % width)
        state = folded.get(key)
        if state is None:
            folded[key] = [value, value, value, 1, value, ts]
            continue
        state[0] = min(state[0], value)
        state[1] = max(state[1], value)
        state[2] += value
        state[3] += 1
        if ts >= state[5]:
            state[4], state[5] = value, ts
    return [(sid, bucket, s[0], s[1], s[2], int(s[3]), s[4], int(s[5])) for (sid, bucket), s in folded.items()]


def _fts_query(text: str) -> str:
    """Every word must occur: each becomes a quoted FTS5 phrase, so punctuation in it is not syntax."""
    words = [word.replace('"', '""') for word in text.split()]
    return " ".join(f'"{word}"' for word in words)


def _log_filter(query: LogQuery, *, paged: bool) -> tuple[str, str, list[object]]:
    """FROM and WHERE for a log query, with its parameters."""
    clauses: list[str] = ["l.team_id = ?"]
    params: list[object] = [query.team_id]
    source = "logs AS l"
    if query.text and query.text.split():  # a text of separators only has no word to require (nor to MATCH)
        # As a subquery the FTS index is searched once; as a join SQLite may re-run the search per log row.
        clauses.append("l.id IN (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?)")
        params.append(_fts_query(query.text))
    _filter_logs(query, clauses, params, paged=paged)
    return source, " AND ".join(clauses), params


def _filter_logs(query: LogQuery, clauses: list[str], params: list[object], *, paged: bool) -> None:
    if query.server_ids is not None:
        clauses.append(f"l.server_id IN ({','.join('?' * len(query.server_ids)) or 'NULL'})")
        params.extend(query.server_ids)
    if query.levels:
        clauses.append(f"l.level IN ({','.join('?' * len(query.levels))})")
        params.extend(query.levels)
    if query.source:
        clauses.append("l.source = ?")
        params.append(query.source)
    if query.start is not None:
        clauses.append("l.ts >= ?")
        params.append(query.start)
    if query.end is not None:
        clauses.append("l.ts < ?")
        params.append(query.end)
    if paged and query.before is not None:
        clauses.append("(l.ts < ? OR (l.ts = ? AND l.id < ?))")
        params.extend((query.before[0], query.before[0], query.before[1]))


__all__ = ["EmbeddedStore", "label_pairs"]
