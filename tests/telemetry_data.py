"""Known telemetry for the store suites (test_telemetry_store.py on every backend, test_clickhouse_store.py)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

from hostatlas.telemetry.storage.contract import Agg, MetricPoint, SeriesQuery, TelemetryStore, Tier

DAY_START = 1_795_564_800  # 2026-11-25T00:00:00Z: a day boundary, so every tier aligns
DAY = 86_400
TEAM, OTHER_TEAM = 1, 2
SERVERS = (11, 12, 13)
SPIKE_TS = DAY_START + 13 * 3600 + 52  # off the 15 s grid, and the newest point of its minute

AGGREGATES: dict[Agg, Callable[[list[tuple[int, float]]], float]] = {
    Agg.MIN: lambda v: min(x for _, x in v),
    Agg.MAX: lambda v: max(x for _, x in v),
    Agg.SUM: lambda v: sum(x for _, x in v),
    Agg.COUNT: lambda v: float(len(v)),
    Agg.AVG: lambda v: sum(x for _, x in v) / len(v),
    Agg.LAST: lambda v: max(v)[1],  # the value of the newest point
}


def _value(server: int, ts: int) -> float:
    """Known, varied values: a daily wave plus a per-server offset and a sawtooth."""
    return round(50 + 40 * math.sin((ts - DAY_START) / 5000) + server % 10 + (ts % 240) / 60, 4)


def wave_day(metric: str = "cpu.percent", labels: str = "") -> list[MetricPoint]:
    """A day of points every 15 s for each of SERVERS, and one spike of 1000 on the second at SPIKE_TS."""
    points = [MetricPoint(TEAM, server, metric, labels, ts, _value(server, ts))
              for server in SERVERS for ts in range(DAY_START, DAY_START + DAY, 15)]
    points.append(MetricPoint(TEAM, SERVERS[1], metric, labels, SPIKE_TS, 1000.0))
    return points


def expected_per_server(points: list[MetricPoint], step: int, agg: Agg) -> dict[int, dict[int, float]]:
    """server → bucket → the aggregate of the raw points, computed here, for comparison with the store's."""
    buckets: dict[int, dict[int, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        buckets[p.server_id][p.ts - p.ts % step].append((p.ts, p.value))
    return {server: {bucket: AGGREGATES[agg](values) for bucket, values in by_bucket.items()}
            for server, by_bucket in buckets.items()}


def assert_close(got: dict[int, dict[int, float]], expected: dict[int, dict[int, float]], label: object) -> None:
    assert got.keys() == expected.keys(), label
    for server, buckets in expected.items():
        assert got[server].keys() == buckets.keys(), (label, server)
        for bucket, value in buckets.items():
            assert math.isclose(got[server][bucket], value, rel_tol=1e-9, abs_tol=1e-9), (label, server, bucket)


def series_points(store: TelemetryStore, *, step: int, agg: Agg, tier: Tier, servers: tuple[int, ...] = SERVERS,
                  metric: str = "cpu.percent", labels: dict[str, str] | None = None, team: int = TEAM,
                  start: int = DAY_START, end: int = DAY_START + DAY) -> dict[int, dict[int, float]]:
    """server → bucket → value, as the store answers the query."""
    found = store.query_series(SeriesQuery(team, servers, metric, labels or {}, start, end, step, agg, tier))
    return {series.server_id: dict(series.points) for series in found}


def insert_in_batches(store: TelemetryStore, points: list[MetricPoint], size: int = 3000) -> None:
    for start in range(0, len(points), size):
        store.insert_metrics(points[start:start + size])
