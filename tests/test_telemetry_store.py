"""The telemetry store contract, run against every backend: the embedded store and ClickHouse."""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostatlas.telemetry.embedded import EmbeddedStore
from hostatlas.telemetry.model import (
    Agg,
    LogQuery,
    LogRecord,
    MetricPoint,
    Retention,
    SeriesQuery,
    TelemetryStore,
    Tier,
)

DAY_START = 1_795_564_800  # 2026-11-25T00:00:00Z: a day boundary, so every tier aligns
DAY = 86_400
TEAM, OTHER_TEAM = 1, 2
SERVERS = (11, 12, 13)


@pytest.fixture(params=["embedded", "clickhouse"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelemetryStore]:
    backend: TelemetryStore
    if request.param == "embedded":
        backend = EmbeddedStore(tmp_path / "telemetry.db")
    else:
        from hostatlas.telemetry.clickhouse import ClickHouseStore

        backend = ClickHouseStore(str(request.getfixturevalue("clickhouse_db_url")))
    backend.migrate()
    yield backend
    backend.close()


def _day_of_points() -> list[MetricPoint]:
    rng = random.Random(7)
    points = []
    for server in SERVERS:
        for ts in range(DAY_START, DAY_START + DAY, 15):
            points.append(MetricPoint(TEAM, server, "cpu.percent", "", ts, round(rng.uniform(0, 60), 3)))
            points.append(MetricPoint(TEAM, server, "disk.used_percent", "mount=/", ts, 40.0 + (ts % 7)))
            points.append(MetricPoint(TEAM, server, "disk.used_percent", "mount=/data", ts, 70.0))
    # One spike: a single 15-second sample, which must survive every rollup in max.
    points.append(MetricPoint(TEAM, SERVERS[0], "cpu.percent", "", DAY_START + 12 * 3600 + 7, 99.5))
    # Another team's series with the same name must never leak into team 1's answers.
    points.append(MetricPoint(OTHER_TEAM, SERVERS[0], "cpu.percent", "", DAY_START + 60, 1000.0))
    return points


def _expected(points: list[MetricPoint], server: int, step: int, agg: Agg) -> dict[int, float]:
    buckets: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for p in points:
        if p.team_id == TEAM and p.server_id == server and p.metric == "cpu.percent":
            buckets[p.ts - p.ts % step].append((p.ts, p.value))
    compute = {Agg.MIN: lambda v: min(x for _, x in v), Agg.MAX: lambda v: max(x for _, x in v),
               Agg.AVG: lambda v: sum(x for _, x in v) / len(v), Agg.COUNT: lambda v: float(len(v)),
               Agg.SUM: lambda v: sum(x for _, x in v), Agg.LAST: lambda v: max(v)[1]}[agg]
    return {bucket: compute(values) for bucket, values in buckets.items()}


def _query(store: TelemetryStore, *, step: int, agg: Agg, tier: Tier, servers: tuple[int, ...] = SERVERS,
           metric: str = "cpu.percent", labels: dict[str, str] | None = None, team: int = TEAM,
           start: int = DAY_START, end: int = DAY_START + DAY) -> dict[int, dict[int, float]]:
    found = store.query_series(SeriesQuery(team, servers, metric, labels or {}, start, end, step, agg, tier))
    return {series.server_id: dict(series.points) for series in found}


def _insert_in_batches(store: TelemetryStore, points: list[MetricPoint], size: int = 3000) -> None:
    for start in range(0, len(points), size):
        store.insert_metrics(points[start:start + size])


@pytest.mark.parametrize(("step", "tier"), [(60, Tier.MINUTE), (3600, Tier.HOUR), (900, Tier.MINUTE),
                                            (300, Tier.RAW)])
def test_rollups_give_the_aggregates_of_the_raw_points(store: TelemetryStore, step: int, tier: Tier) -> None:
    points = _day_of_points()
    _insert_in_batches(store, points)
    for agg in Agg:
        answered = _query(store, step=step, agg=agg, tier=tier)
        assert set(answered) == set(SERVERS)
        for server in SERVERS:
            expected = _expected(points, server, step, agg)
            got = answered[server]
            assert set(got) == set(expected), (agg, server)
            for bucket, value in expected.items():
                assert math.isclose(got[bucket], value, rel_tol=1e-9, abs_tol=1e-9), (agg, server, bucket)


def test_the_store_answers_its_ping_and_writes_after_it(store: TelemetryStore) -> None:
    # The storer pings after a failed INSERT to tell an outage from a frame the store refuses.
    store.ping()
    _insert_in_batches(store, _day_of_points()[:10])
    store.ping()


def test_a_spike_survives_the_hourly_rollup(store: TelemetryStore) -> None:
    _insert_in_batches(store, _day_of_points())
    hourly = _query(store, step=3600, agg=Agg.MAX, tier=Tier.HOUR)[SERVERS[0]]
    assert hourly[DAY_START + 12 * 3600] == 99.5
    daily = _query(store, step=DAY, agg=Agg.MAX, tier=Tier.HOUR)[SERVERS[0]]
    assert daily == {DAY_START: 99.5}


def test_label_filters_pick_series(store: TelemetryStore) -> None:
    _insert_in_batches(store, _day_of_points())
    root = store.query_series(SeriesQuery(TEAM, SERVERS, "disk.used_percent", {"mount": "/"}, DAY_START,
                                          DAY_START + 3600, 3600, Agg.MAX, Tier.HOUR))
    assert {(s.server_id, s.labels) for s in root} == {(server, "mount=/") for server in SERVERS}
    every = store.query_series(SeriesQuery(TEAM, SERVERS[:1], "disk.used_percent", {}, DAY_START,
                                           DAY_START + 3600, 3600, Agg.AVG, Tier.HOUR))
    assert sorted(s.labels for s in every) == ["mount=/", "mount=/data"]
    assert store.query_series(SeriesQuery(TEAM, SERVERS, "disk.used_percent", {"mount": "/dat"}, DAY_START,
                                          DAY_START + 3600, 3600, Agg.MAX, Tier.HOUR)) == []
    assert store.metric_names(TEAM, SERVERS[0]) == [("cpu.percent", ""), ("disk.used_percent", "mount=/"),
                                                    ("disk.used_percent", "mount=/data")]


def test_queries_are_scoped_by_team(store: TelemetryStore) -> None:
    _insert_in_batches(store, _day_of_points())
    other = _query(store, step=3600, agg=Agg.MAX, tier=Tier.HOUR, team=OTHER_TEAM)
    assert other == {SERVERS[0]: {DAY_START: 1000.0}}
    assert max(_query(store, step=DAY, agg=Agg.MAX, tier=Tier.HOUR)[SERVERS[0]].values()) == 99.5
    assert store.metric_names(OTHER_TEAM, SERVERS[1]) == []


def test_retention_removes_older_and_nothing_newer(store: TelemetryStore) -> None:
    _insert_in_batches(store, _day_of_points())
    now = DAY_START + DAY
    cutoff_raw = now - 6 * 3600
    store.enforce_retention(Retention(raw_seconds=6 * 3600, minute_seconds=12 * 3600, hour_seconds=DAY,
                                      logs_seconds=DAY), now)
    raw = _query(store, step=15, agg=Agg.COUNT, tier=Tier.RAW, servers=SERVERS[:1])[SERVERS[0]]
    assert min(raw) == cutoff_raw and len(raw) == 6 * 3600 // 15
    minute = _query(store, step=60, agg=Agg.COUNT, tier=Tier.MINUTE, servers=SERVERS[:1])[SERVERS[0]]
    assert min(minute) == now - 12 * 3600 and len(minute) == 12 * 60
    hourly = _query(store, step=3600, agg=Agg.COUNT, tier=Tier.HOUR, servers=SERVERS[:1])[SERVERS[0]]
    assert len(hourly) == 24


WORDS = ("timeout", "upstream", "refused", "accepted", "deploy", "cache", "Timeout")


def _logs(count: int = 10_000) -> list[LogRecord]:
    rng = random.Random(11)
    records = []
    for index in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 3)))
        level = rng.choice(("info", "warning", "error"))
        line = f"line {index} {words} tail".strip()
        records.append(LogRecord(TEAM, SERVERS[index % 3], DAY_START + index * 0.5, "/var/log/app.log", level,
                                 line, "{}", line))
    records.append(LogRecord(OTHER_TEAM, SERVERS[0], DAY_START, "/var/log/app.log", "error", "timeout", "{}",
                             "timeout elsewhere"))
    return records


def test_word_search_is_exact_newest_first_and_pages_cleanly(store: TelemetryStore) -> None:
    records = _logs()
    for start in range(0, len(records), 1000):
        store.insert_logs(records[start:start + 1000])
    word = re.compile(r"\btimeout\b", re.IGNORECASE)
    expected = sorted((r for r in records if r.team_id == TEAM and word.search(r.line)), key=lambda r: -r.ts)
    seen, before = [], None
    for _ in range(100):
        page = store.query_logs(LogQuery(TEAM, None, "timeout", None, None, None, None, 250, before))
        if not page:
            break
        seen.extend(page)
        before = (page[-1].ts, page[-1].id)
    assert [log.line for log in seen] == [r.line for r in expected]
    assert len({log.id for log in seen}) == len(seen)


@pytest.mark.parametrize("text", [" ", "\n", "\r\u2028", "\t \x0b"])
def test_a_search_text_without_words_requires_none(store: TelemetryStore, text: str) -> None:
    store.insert_logs(_logs()[:50])
    everything = LogQuery(TEAM, None, None, None, None, None, None, 100)
    spaces = LogQuery(TEAM, None, text, None, None, None, None, 100)
    assert store.query_logs(spaces) == store.query_logs(everything)
    assert store.count_logs(spaces) == store.count_logs(everything) > 0


def test_log_filters(store: TelemetryStore) -> None:
    store.insert_logs(_logs(3000))
    errors = store.query_logs(LogQuery(TEAM, [SERVERS[1]], None, ["error"], "/var/log/app.log", DAY_START + 100,
                                       DAY_START + 1000, 5000))
    assert errors and all(log.level == "error" and log.server_id == SERVERS[1] for log in errors)
    assert all(DAY_START + 100 <= log.ts < DAY_START + 1000 for log in errors)
    assert store.query_logs(LogQuery(OTHER_TEAM, None, "deploy", None, None, None, None, 10)) == []
    store.enforce_retention(Retention(DAY, DAY, DAY, logs_seconds=500), DAY_START + 1000)
    left = store.query_logs(LogQuery(TEAM, None, None, None, None, None, None, 10_000))
    assert left and min(log.ts for log in left) >= DAY_START + 500
    assert len(left) == 2000  # two lines a second, from 500 s to 1,500 s
