"""The telemetry store contract: what ingestion writes and the query API reads, whatever the backend.

Two backends implement ``TelemetryStore``: ``embedded.EmbeddedStore`` (SQLite in its own file, the
default) and ``clickhouse.ClickHouseStore`` (when HOSTATLAS_CLICKHOUSE_URL is set). One contract test
suite (tests/test_telemetry_store.py) runs against both.

Conventions every backend follows:
- Times are unix seconds. Metric points are whole seconds (``int``); log timestamps keep sub-seconds.
- ``labels`` is the canonical label string: ``k=v`` pairs sorted by key, joined by ``,`` ("" for none),
  so that one series is one (team_id, server_id, metric, labels) key everywhere.
- Rollup tiers keep, per series and bucket, min, max, sum, count and last (the value with the latest
  timestamp, ``last_ts``), so any aggregate of any coarser step can be computed from them exactly.
- Every read is scoped by team_id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol


class Agg(StrEnum):
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    LAST = "last"


class Tier(StrEnum):
    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"


TIER_SECONDS = {Tier.RAW: 1, Tier.MINUTE: 60, Tier.HOUR: 3600}

LEVELS = ("debug", "info", "notice", "warning", "error", "critical")


# Rows are NamedTuples rather than dataclasses: ingestion makes tens of thousands a second, and a
# tuple is built in C, several times faster than a frozen dataclass's __init__.
class MetricPoint(NamedTuple):
    team_id: int
    server_id: int
    metric: str
    labels: str
    ts: int
    value: float


class LogRecord(NamedTuple):
    team_id: int
    server_id: int
    ts: float
    source: str
    level: str  # one of LEVELS
    message: str
    fields: str  # JSON object text of parsed fields ("{}" for none)
    line: str  # the raw line as received


@dataclass(frozen=True)
class SeriesQuery:
    team_id: int
    server_ids: Sequence[int]
    metric: str
    label_filters: dict[str, str]  # every given label must match exactly
    start: int  # inclusive, unix s
    end: int  # exclusive, unix s
    step: int  # seconds per output point; a multiple of the tier's bucket
    agg: Agg
    tier: Tier


# How a WindowFilter compares, spelled as in alert rules; each store maps them onto its own SQL.
COMPARISONS = (">", ">=", "<", "<=", "==", "!=")


@dataclass(frozen=True)
class WindowFilter:
    """Only the series worth a look: those whose aggregate ``operator``s ``threshold`` (one of COMPARISONS), and
    every series of the servers in ``keep``. An alert rule asks for the series meeting its condition plus those
    of the servers it already tracks: a fleet that is fine answers almost nothing, instead of a value per series
    that the evaluating process (often the serving one) must decode and compare each tick."""

    operator: str
    threshold: float
    keep: Sequence[int] = ()

    def __post_init__(self) -> None:
        if self.operator not in COMPARISONS:
            raise ValueError(f"unknown comparison {self.operator!r}")


@dataclass(frozen=True)
class WindowQuery:
    """One aggregate per series over a short window of raw points: what an alert rule evaluates each tick."""

    team_id: int
    server_ids: Sequence[int] | None  # None: every server of the team
    metric: str
    label_filters: dict[str, str]  # every given label must match exactly
    start: int  # inclusive, unix s
    end: int  # exclusive, unix s
    agg: Agg
    only: WindowFilter | None = None  # None: every series with points


class WindowValue(NamedTuple):
    server_id: int
    labels: str  # canonical label string
    value: float


@dataclass
class Series:
    server_id: int
    metric: str
    labels: str
    points: list[tuple[int, float]] = field(default_factory=list)  # (bucket start, value), ascending


@dataclass(frozen=True)
class LogQuery:
    team_id: int
    server_ids: Sequence[int] | None  # None: all the team's servers
    text: str | None  # every word must occur in the line (whole-word, case-insensitive)
    levels: Sequence[str] | None
    source: str | None
    start: float | None
    end: float | None
    limit: int
    # Keyset position, newest first: rows strictly older than (ts, id).
    before: tuple[float, int] | None = None


@dataclass(frozen=True)
class StoredLog:
    id: int
    server_id: int
    ts: float
    source: str
    level: str
    message: str
    fields: str
    line: str


@dataclass(frozen=True)
class Retention:
    raw_seconds: int
    minute_seconds: int
    hour_seconds: int
    logs_seconds: int


class TelemetryStore(Protocol):
    def migrate(self) -> None:
        """Create or upgrade the store's schema; idempotent."""

    def ping(self) -> None:
        """Raise if the store cannot take writes right now: tells an outage from data it refuses."""

    def insert_metrics(self, points: Sequence[MetricPoint]) -> None:
        """Store raw points and fold them into every rollup tier, durably, before returning."""

    def insert_logs(self, records: Sequence[LogRecord]) -> None:
        """Store log records, searchable, durably, before returning."""

    def query_series(self, query: SeriesQuery) -> list[Series]:
        """One Series per matching (server, labels), points bucketed by query.step, empty buckets left out."""

    def aggregate_window(self, query: WindowQuery) -> list[WindowValue]:
        """One value per series (server, labels) with at least one raw point in [start, end): the agg of those
        points (``last``: the value with the latest ts); series without points are left out. ONE grouped query
        across every server (never a query per server), from the raw tier. Order: (server_id, labels)."""

    def metric_names(self, team_id: int, server_id: int) -> list[tuple[str, str]]:
        """(metric, labels) pairs the server has reported, sorted."""

    def query_logs(self, query: LogQuery) -> list[StoredLog]:
        """Matching logs, newest first (ts desc, id desc), at most query.limit."""

    def count_logs(self, query: LogQuery) -> int:
        """How many logs match, ignoring query.limit and query.before."""

    def enforce_retention(self, retention: Retention, now: int) -> dict[str, int]:
        """Remove what is older than each tier's retention and nothing newer; returns rows or parts removed."""

    def close(self) -> None: ...
