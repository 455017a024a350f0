"""Window reads for alert rules (``aggregate_window``) and backtests (``sliding_windows``), on every backend.

Each answer is compared with the aggregate computed here from the very points inserted.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import time_machine

from hostatlas.telemetry.query.windows import MAX_EVALUATIONS, sliding_windows
from hostatlas.telemetry.storage.contract import (
    COMPARISONS,
    Agg,
    MetricPoint,
    Retention,
    TelemetryStore,
    WindowFilter,
    WindowQuery,
    WindowValue,
)
from hostatlas.telemetry.storage.embedded import EmbeddedStore
from hostatlas.telemetry.storage.series import matches_labels
from tests.cluster_store import ClusterStore, cluster_store
from tests.telemetry_data import AGGREGATES, DAY, DAY_START, OTHER_TEAM, TEAM, insert_in_batches

pytestmark = pytest.mark.long_running(70)

SERVERS = (11, 12, 13, 14)
T0 = DAY_START + 600


# ClickHouse answers windows of the last day from a (team, metric, ts)-ordered copy of the raw points and older
# ones from the raw table: the clock is set just after the data ("recent") or days later ("old") to test both.
@pytest.fixture(scope="module")
def cluster_database(clickhouse_cluster_url: str) -> Iterator[ClusterStore]:
    """The store on two shards, migrated once for the module (ON CLUSTER DDL is slow) and emptied per test."""
    with cluster_store(clickhouse_cluster_url) as made:
        yield made


@pytest.fixture(params=["embedded", "clickhouse-recent", "clickhouse-old", "clickhouse-cluster-recent"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelemetryStore]:
    backend: TelemetryStore
    now = T0 + 3 * DAY
    if request.param == "embedded":
        backend = EmbeddedStore(tmp_path / "telemetry.db")
    else:
        from hostatlas.telemetry.storage.clickhouse import ClickHouseStore

        if request.param.startswith("clickhouse-cluster"):
            made: ClusterStore = request.getfixturevalue("cluster_database")
            made.empty()
            backend = made.open()
        else:
            backend = ClickHouseStore(str(request.getfixturevalue("clickhouse_db_url")))
        if request.param.endswith("-recent"):
            now = T0 + 1800
    with time_machine.travel(now, tick=False):
        backend.migrate()
        yield backend
        backend.close()


def _points() -> list[MetricPoint]:
    """Twenty minutes of 15-s points with random values (and a few random gaps), on several series per server."""
    rng = random.Random(13)
    points = []
    for server in SERVERS:
        for ts in range(T0, T0 + 1200, 15):
            if rng.random() < 0.1:
                continue  # gaps, so that counts differ between windows
            points.append(MetricPoint(TEAM, server, "cpu.percent", "", ts, round(rng.uniform(0, 100), 3)))
            points.append(MetricPoint(TEAM, server, "disk.used_percent", "mount=/", ts, round(rng.uniform(40, 60), 3)))
            points.append(MetricPoint(TEAM, server, "disk.used_percent", "mount=/boot", ts, 90.0))
            points.append(MetricPoint(TEAM, server, "disk.used_percent", "dev=sda,mount=/data", ts,
                                      round(rng.uniform(0, 5), 3)))
    # Server 14 stops reporting cpu after 10 minutes: windows after that leave it out.
    points = [p for p in points if not (p.server_id == 14 and p.metric == "cpu.percent" and p.ts >= T0 + 600)]
    # The same names in another team, which must never leak in.
    points += [MetricPoint(OTHER_TEAM, server, "cpu.percent", "", T0 + 60, 1e6) for server in SERVERS]
    return points


@pytest.fixture
def filled(store: TelemetryStore) -> tuple[TelemetryStore, list[MetricPoint]]:
    points = _points()
    insert_in_batches(store, points, size=700)
    return store, points


def _expected(points: list[MetricPoint], query: WindowQuery) -> dict[tuple[int, str], float]:
    grouped: dict[tuple[int, str], list[tuple[int, float]]] = defaultdict(list)
    for p in points:
        if (p.team_id == query.team_id and p.metric == query.metric and query.start <= p.ts < query.end
                and (query.server_ids is None or p.server_id in query.server_ids)
                and matches_labels(p.labels, query.label_filters)):
            grouped[(p.server_id, p.labels)].append((p.ts, p.value))
    return {key: AGGREGATES[query.agg](values) for key, values in grouped.items()}


def _check(answer: list[WindowValue], expected: dict[tuple[int, str], float], label: object) -> None:
    keys = [(value.server_id, value.labels) for value in answer]
    assert keys == sorted(expected), label  # one value per series, ordered by (server_id, labels)
    for value in answer:
        assert math.isclose(value.value, expected[(value.server_id, value.labels)], rel_tol=1e-9, abs_tol=1e-9), \
            (label, value)


@pytest.mark.parametrize("agg", list(Agg))
def test_each_aggregate_of_a_window_equals_the_raw_points(filled: tuple[TelemetryStore, list[MetricPoint]],
                                                          agg: Agg) -> None:
    store, points = filled
    for metric in ("cpu.percent", "disk.used_percent"):
        for start, end in ((T0, T0 + 300), (T0 + 420, T0 + 720), (T0 + 7, T0 + 1193), (T0 + 900, T0 + 960)):
            query = WindowQuery(TEAM, None, metric, {}, start, end, agg)
            _check(store.aggregate_window(query), _expected(points, query), (metric, start, end, agg))


COMPARE = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__, "==": float.__eq__,
           "!=": float.__ne__}


@pytest.mark.parametrize("agg", [Agg.AVG, Agg.MAX, Agg.LAST, Agg.COUNT])
@pytest.mark.parametrize("operator", COMPARISONS)
def test_a_filter_answers_the_series_meeting_it_and_every_series_of_the_servers_kept(
        filled: tuple[TelemetryStore, list[MetricPoint]], agg: Agg, operator: str) -> None:
    store, points = filled
    for metric, threshold in (("cpu.percent", 50.0), ("disk.used_percent", 90.0), ("disk.used_percent", 45.5)):
        for keep in ((), (12,), (11, 14, 999)):
            base = WindowQuery(TEAM, None, metric, {}, T0, T0 + 300, agg)
            expected = {key: value for key, value in _expected(points, base).items()
                        if COMPARE[operator](float(value), threshold) or key[0] in keep}
            query = WindowQuery(TEAM, None, metric, {}, T0, T0 + 300, agg, only=WindowFilter(operator, threshold, keep))
            _check(store.aggregate_window(query), expected, (metric, operator, threshold, keep))
    with pytest.raises(ValueError, match="unknown comparison"):
        WindowFilter("; DROP TABLE series", 1.0)


def test_last_is_the_value_of_the_newest_point_whatever_the_insert_order(store: TelemetryStore) -> None:
    store.insert_metrics([MetricPoint(TEAM, 11, "load.1", "", T0 + 30, 3.0)])
    store.insert_metrics([MetricPoint(TEAM, 11, "load.1", "", T0 + 10, 9.0)])
    store.insert_metrics([MetricPoint(TEAM, 11, "load.1", "", T0 + 20, 1.0)])
    query = WindowQuery(TEAM, None, "load.1", {}, T0, T0 + 60, Agg.LAST)
    assert store.aggregate_window(query) == [WindowValue(11, "", 3.0)]


def test_label_filters_match_whole_pairs(filled: tuple[TelemetryStore, list[MetricPoint]]) -> None:
    store, points = filled
    for filters in ({"mount": "/"}, {"mount": "/data"}, {"dev": "sda"}, {"dev": "sda", "mount": "/data"},
                    {"mount": "/bo"}, {"dev": "sda", "mount": "/"}, {"nope": "x"}):
        query = WindowQuery(TEAM, None, "disk.used_percent", filters, T0, T0 + 300, Agg.MAX)
        expected = _expected(points, query)
        _check(store.aggregate_window(query), expected, filters)
    root = store.aggregate_window(WindowQuery(TEAM, None, "disk.used_percent", {"mount": "/"}, T0, T0 + 300,
                                              Agg.COUNT))
    assert {value.labels for value in root} == {"mount=/"}


def test_server_subsets_and_none_for_every_server(filled: tuple[TelemetryStore, list[MetricPoint]]) -> None:
    store, points = filled
    # A long list (ClickHouse filters one of thousands of ids on its side rather than in the SQL).
    many = [server for server in range(1, 3000) if server not in (12, 14)]
    for servers in ([12], [11, 13], [13, 999], list(SERVERS), None, many):
        query = WindowQuery(TEAM, servers, "cpu.percent", {}, T0, T0 + 300, Agg.AVG)
        _check(store.aggregate_window(query), _expected(points, query), servers)
    assert store.aggregate_window(WindowQuery(TEAM, [], "cpu.percent", {}, T0, T0 + 300, Agg.AVG)) == []
    assert store.aggregate_window(WindowQuery(TEAM, [999], "cpu.percent", {}, T0, T0 + 300, Agg.AVG)) == []


def test_series_without_points_in_the_window_are_left_out(filled: tuple[TelemetryStore, list[MetricPoint]]) -> None:
    store, _ = filled
    late = store.aggregate_window(WindowQuery(TEAM, None, "cpu.percent", {}, T0 + 900, T0 + 1200, Agg.COUNT))
    assert {value.server_id for value in late} == {11, 12, 13}  # 14 went quiet after 10 minutes
    for start, end in ((T0 - 600, T0), (T0 + 1200, T0 + 1800), (T0 + 300, T0 + 300), (T0 + 300, T0 + 200)):
        assert store.aggregate_window(WindowQuery(TEAM, None, "cpu.percent", {}, start, end, Agg.COUNT)) == []
    assert store.aggregate_window(WindowQuery(TEAM, None, "no.such.metric", {}, T0, T0 + 1200, Agg.MAX)) == []


def test_teams_never_see_each_other(filled: tuple[TelemetryStore, list[MetricPoint]]) -> None:
    store, points = filled
    mine = store.aggregate_window(WindowQuery(TEAM, None, "cpu.percent", {}, T0, T0 + 300, Agg.MAX))
    assert all(value.value <= 100 for value in mine)
    theirs = WindowQuery(OTHER_TEAM, None, "cpu.percent", {}, T0, T0 + 300, Agg.MAX)
    assert store.aggregate_window(theirs) == [WindowValue(server, "", 1e6) for server in SERVERS]
    assert store.aggregate_window(WindowQuery(OTHER_TEAM, None, "disk.used_percent", {}, T0, T0 + 300,
                                              Agg.MAX)) == []
    assert store.aggregate_window(WindowQuery(3, None, "cpu.percent", {}, T0, T0 + 300, Agg.MAX)) == []


def test_start_is_inclusive_and_end_exclusive(store: TelemetryStore) -> None:
    store.insert_metrics([MetricPoint(TEAM, 11, "mem.used_percent", "", ts, float(ts - T0)) for ts in (0 + T0,
                                                                                                      60 + T0,
                                                                                                      120 + T0)])

    def window(start: int, end: int) -> list[float]:
        query = WindowQuery(TEAM, [11], "mem.used_percent", {}, T0 + start, T0 + end, Agg.SUM)
        return [value.value for value in store.aggregate_window(query)]

    assert window(0, 60) == [0.0]
    assert window(0, 61) == [60.0]
    assert window(1, 120) == [60.0]
    assert window(60, 121) == [180.0]
    assert window(121, 180) == []


# -- sliding windows (backtests) --


@pytest.mark.parametrize(("window", "every", "agg"), [(300, 60, Agg.AVG), (300, 15, Agg.LAST), (120, 45, Agg.MAX),
                                                      (60, 60, Agg.MIN), (90, 20, Agg.SUM), (300, 30, Agg.COUNT),
                                                      (45, 300, Agg.LAST), (600, 120, Agg.AVG)])
def test_sliding_windows_equal_the_live_window_at_every_time(filled: tuple[TelemetryStore, list[MetricPoint]],
                                                             window: int, every: int, agg: Agg) -> None:
    store, _ = filled
    start, end = T0 - 120, T0 + 1320
    for metric, filters, servers in (("cpu.percent", {}, None), ("disk.used_percent", {"mount": "/"}, [11, 14]),
                                     ("disk.used_percent", {}, [12])):
        got = sliding_windows(store, team_id=TEAM, server_ids=servers, metric=metric, label_filters=filters, agg=agg,
                              window=window, every=every, start=start, end=end)
        times = [t for t in range(start, end + 1) if t % every == 0]
        live: dict[tuple[int, str], list[tuple[int, float | None]]] = defaultdict(list)
        seen: set[tuple[int, str]] = set()
        at: dict[int, dict[tuple[int, str], float]] = {}
        for t in times:
            found = store.aggregate_window(WindowQuery(TEAM, servers, metric, filters, t - window, t, agg))
            at[t] = {(v.server_id, v.labels): v.value for v in found}
            seen.update(at[t])
        for t in times:
            for key in seen:
                live[key].append((t, at[t].get(key)))
        assert got.keys() == live.keys(), (metric, filters)
        for key, expected in live.items():
            assert [t for t, _ in got[key]] == times
            for (t, got_value), (_, want) in zip(got[key], expected, strict=True):
                if want is None:
                    assert got_value is None, (key, t)
                else:
                    assert got_value is not None, (key, t)
                    assert math.isclose(got_value, want, rel_tol=1e-9, abs_tol=1e-9), (key, t)


def test_sliding_windows_refuse_too_much_work_and_bad_arguments(store: TelemetryStore) -> None:
    store.insert_metrics([MetricPoint(TEAM, 11, "cpu.percent", "", T0, 1.0)])

    def slide(window: int, every: int, start: int, end: int) -> dict[tuple[int, str], list[tuple[int, float | None]]]:
        return sliding_windows(store, team_id=TEAM, server_ids=None, metric="cpu.percent", label_filters={},
                               agg=Agg.AVG, window=window, every=every, start=start, end=end)

    with pytest.raises(ValueError, match="evaluation"):
        slide(300, 1, T0, T0 + MAX_EVALUATIONS + 10)
    with pytest.raises(ValueError, match="buckets"):
        slide(7, 100, T0, T0 + 2_000_000)  # 20,000 evaluations, but 2 million 1-second buckets
    for window, every, start, end in ((0, 60, T0, T0 + 60), (60, 0, T0, T0 + 60), (60, 60, T0 + 60, T0)):
        with pytest.raises(ValueError):
            slide(window, every, start, end)
    # A range holding no evaluation time, or no data, is empty rather than an error.
    assert slide(60, 600, T0 + 1, T0 + 599) == {}
    assert slide(60, 60, T0 + 3600, T0 + 7200) == {}
    assert slide(60, 60, T0, T0 + 60) == {(11, ""): [(T0, None), (T0 + 60, 1.0)]}


def test_windows_read_the_same_points_after_retention(store: TelemetryStore) -> None:
    stamps = range(T0, T0 + 4 * 3600, 60)
    store.insert_metrics([MetricPoint(TEAM, 11, "load.1", "", ts, 1.0) for ts in stamps])
    now = T0 + 4 * 3600
    store.enforce_retention(Retention(raw_seconds=3 * 3600 + 30, minute_seconds=DAY, hour_seconds=DAY,
                                      logs_seconds=DAY), now)
    query = WindowQuery(TEAM, None, "load.1", {}, T0, now, Agg.COUNT)
    kept = sum(1 for ts in stamps if ts >= now - 3 * 3600 - 30)
    assert store.aggregate_window(query) == [WindowValue(11, "", float(kept))]
