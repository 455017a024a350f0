"""The telemetry store contract (telemetry/storage/contract.py), run against every backend: the embedded store and
ClickHouse. Every behaviour a caller may rely on is here; test_clickhouse_store.py holds only what is ClickHouse's own.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hostatlas.telemetry.storage.contract import (
    Agg,
    LogQuery,
    LogRecord,
    MetricPoint,
    Retention,
    SeriesQuery,
    TelemetryStore,
    Tier,
)
from hostatlas.telemetry.storage.embedded import EmbeddedStore
from tests.cluster_store import ClusterStore, cluster_store
from tests.telemetry_data import (
    AGGREGATES,
    DAY,
    DAY_START,
    OTHER_TEAM,
    SERVERS,
    SPIKE_TS,
    TEAM,
    assert_close,
    expected_per_server,
    insert_in_batches,
    series_points,
    wave_day,
)

pytestmark = pytest.mark.long_running(90)


@pytest.fixture(scope="module")
def cluster_database(clickhouse_cluster_url: str) -> Iterator[ClusterStore]:
    """The store on two shards, migrated once for the module (ON CLUSTER DDL is slow) and emptied per test."""
    with cluster_store(clickhouse_cluster_url) as made:
        yield made


@pytest.fixture(params=["embedded", "clickhouse", "clickhouse-cluster"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelemetryStore]:
    backend: TelemetryStore
    if request.param == "embedded":
        backend = EmbeddedStore(tmp_path / "telemetry.db")
    elif request.param == "clickhouse":
        from hostatlas.telemetry.storage.clickhouse import ClickHouseStore

        backend = ClickHouseStore(str(request.getfixturevalue("clickhouse_db_url")))
    else:
        # Two shards: every answer must be the one a single server gives (rows are sharded by server).
        made: ClusterStore = request.getfixturevalue("cluster_database")
        made.empty()
        backend = made.open()
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
    return {bucket: AGGREGATES[agg](values) for bucket, values in buckets.items()}


@pytest.mark.parametrize(("step", "tier"), [(60, Tier.MINUTE), (3600, Tier.HOUR), (900, Tier.MINUTE),
                                            (300, Tier.RAW)])
def test_rollups_give_the_aggregates_of_the_raw_points(store: TelemetryStore, step: int, tier: Tier) -> None:
    points = _day_of_points()
    insert_in_batches(store, points)
    for agg in Agg:
        answered = series_points(store, step=step, agg=agg, tier=tier)
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
    insert_in_batches(store, _day_of_points()[:10])
    store.ping()


def test_a_spike_survives_the_hourly_rollup(store: TelemetryStore) -> None:
    insert_in_batches(store, _day_of_points())
    hourly = series_points(store, step=3600, agg=Agg.MAX, tier=Tier.HOUR)[SERVERS[0]]
    assert hourly[DAY_START + 12 * 3600] == 99.5
    daily = series_points(store, step=DAY, agg=Agg.MAX, tier=Tier.HOUR)[SERVERS[0]]
    assert daily == {DAY_START: 99.5}


def test_label_filters_pick_series(store: TelemetryStore) -> None:
    insert_in_batches(store, _day_of_points())
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
    insert_in_batches(store, _day_of_points())
    other = series_points(store, step=3600, agg=Agg.MAX, tier=Tier.HOUR, team=OTHER_TEAM)
    assert other == {SERVERS[0]: {DAY_START: 1000.0}}
    assert max(series_points(store, step=DAY, agg=Agg.MAX, tier=Tier.HOUR)[SERVERS[0]].values()) == 99.5
    assert store.metric_names(OTHER_TEAM, SERVERS[1]) == []


def test_retention_removes_older_and_nothing_newer(store: TelemetryStore) -> None:
    insert_in_batches(store, _day_of_points())
    now = DAY_START + DAY
    cutoff_raw = now - 6 * 3600
    store.enforce_retention(Retention(raw_seconds=6 * 3600, minute_seconds=12 * 3600, hour_seconds=DAY,
                                      logs_seconds=DAY), now)
    raw = series_points(store, step=15, agg=Agg.COUNT, tier=Tier.RAW, servers=SERVERS[:1])[SERVERS[0]]
    assert min(raw) == cutoff_raw and len(raw) == 6 * 3600 // 15
    minute = series_points(store, step=60, agg=Agg.COUNT, tier=Tier.MINUTE, servers=SERVERS[:1])[SERVERS[0]]
    assert min(minute) == now - 12 * 3600 and len(minute) == 12 * 60
    hourly = series_points(store, step=3600, agg=Agg.COUNT, tier=Tier.HOUR, servers=SERVERS[:1])[SERVERS[0]]
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


# -- series: every aggregate, every tier, whatever the order and size of the INSERTs --

@pytest.mark.parametrize(("step", "tier"), [(60, Tier.MINUTE), (300, Tier.MINUTE), (3600, Tier.HOUR),
                                            (6 * 3600, Tier.HOUR), (120, Tier.RAW)])
def test_every_aggregate_matches_the_raw_points_whatever_the_inserts(store: TelemetryStore, step: int,
                                                                     tier: Tier) -> None:
    points = wave_day()
    # Shuffled batches of odd sizes split buckets across INSERTs and deliver them out of order: the
    # rollups of one bucket come from several INSERTs and must still give the exact answer.
    random.Random(3).shuffle(points)
    insert_in_batches(store, points, size=2_777)
    for agg in Agg:
        assert_close(series_points(store, step=step, agg=agg, tier=tier), expected_per_server(points, step, agg),
                     (agg, step))


def test_a_spike_survives_every_rollup_in_max(store: TelemetryStore) -> None:
    insert_in_batches(store, wave_day())
    hour = SPIKE_TS - SPIKE_TS % 3600
    assert series_points(store, step=3600, agg=Agg.MAX, tier=Tier.HOUR)[SERVERS[1]][hour] == 1000.0
    minute = SPIKE_TS - SPIKE_TS % 60
    assert series_points(store, step=60, agg=Agg.MAX, tier=Tier.MINUTE)[SERVERS[1]][minute] == 1000.0
    assert series_points(store, step=DAY, agg=Agg.MAX, tier=Tier.HOUR)[SERVERS[1]] == {DAY_START: 1000.0}
    assert max(series_points(store, step=DAY, agg=Agg.MAX, tier=Tier.HOUR)[SERVERS[0]].values()) < 1000.0
    # The last value of the spike's minute is the spike: it is the newest point in it.
    assert series_points(store, step=60, agg=Agg.LAST, tier=Tier.MINUTE)[SERVERS[1]][minute] == 1000.0


def test_a_window_keeps_only_its_buckets(store: TelemetryStore) -> None:
    insert_in_batches(store, wave_day())
    got = series_points(store, step=3600, agg=Agg.COUNT, tier=Tier.MINUTE, start=DAY_START + 2 * 3600,
                        end=DAY_START + 5 * 3600)
    assert got == {server: {DAY_START + h * 3600: 240.0 for h in (2, 3, 4)} for server in SERVERS}


def test_label_filters_match_whole_pairs(store: TelemetryStore) -> None:
    series = {"device=sda,mount=/": 1.0, "device=sdb,mount=/boot": 2.0, "mount=/data": 3.0,
              "device=sda1,mount=/.*": 4.0}
    store.insert_metrics([MetricPoint(TEAM, SERVERS[0], "disk.used_percent", labels, DAY_START, v)
                          for labels, v in series.items()])

    def labels_found(filters: dict[str, str]) -> list[str]:
        query = SeriesQuery(TEAM, SERVERS, "disk.used_percent", filters, DAY_START, DAY_START + 60, 60, Agg.MAX,
                            Tier.RAW)
        return sorted(s.labels for s in store.query_series(query))

    assert labels_found({"mount": "/"}) == ["device=sda,mount=/"]
    assert labels_found({"mount": "/boot", "device": "sdb"}) == ["device=sdb,mount=/boot"]
    assert labels_found({"mount": "/boot", "device": "sda"}) == []
    assert labels_found({"device": "sda"}) == ["device=sda,mount=/"]
    assert labels_found({"mount": "/.*"}) == ["device=sda1,mount=/.*"]
    assert labels_found({"ount": "/"}) == []
    assert labels_found({}) == sorted(series)


def test_teams_never_see_each_others_series(store: TelemetryStore) -> None:
    # The same server id and metric in two teams: only the team_id tells them apart.
    store.insert_metrics([MetricPoint(TEAM, SERVERS[0], "load.1", "", DAY_START, 1.0)])
    store.insert_metrics([MetricPoint(OTHER_TEAM, SERVERS[0], "load.1", "", DAY_START, 9.0)])
    store.insert_metrics([MetricPoint(OTHER_TEAM, SERVERS[0], "secret.metric", "", DAY_START, 9.0)])
    for tier in Tier:
        step = 3600 if tier is Tier.HOUR else 60
        mine = series_points(store, step=step, agg=Agg.MAX, tier=tier, metric="load.1")
        theirs = series_points(store, step=step, agg=Agg.MAX, tier=tier, metric="load.1", team=OTHER_TEAM)
        assert mine == {SERVERS[0]: {DAY_START: 1.0}} and theirs == {SERVERS[0]: {DAY_START: 9.0}}
    assert store.metric_names(TEAM, SERVERS[0]) == [("load.1", "")]
    assert store.metric_names(OTHER_TEAM, SERVERS[0]) == [("load.1", ""), ("secret.metric", "")]
    assert store.metric_names(TEAM, SERVERS[1]) == []


def test_metric_names_are_distinct_and_sorted(store: TelemetryStore) -> None:
    insert_in_batches(store, wave_day("mem.used_percent") + wave_day("disk.used_percent", "mount=/")
                      + wave_day("cpu.percent"))
    assert store.metric_names(TEAM, SERVERS[2]) == [("cpu.percent", ""), ("disk.used_percent", "mount=/"),
                                                    ("mem.used_percent", "")]


# -- logs: word search, filters, paging --

LINES = [
    "upstream timed out (110: Connection timed out) while reading",
    "Connection refused by upstream",
    "TIMEOUT after 30s",
    "read_timeout=5 exceeded",
    "timeouts are increasing",
    "opened /var/log/nginx/error.log",
    "user_id=42 logged in",
    "retry a+b (x) [y] {z} $HOME ^start",
    "Café au lait ready",
    "nothing to see",
]


def _log(ts: float, line: str, *, server: int = SERVERS[0], team: int = TEAM, level: str = "info") -> LogRecord:
    return LogRecord(team, server, ts, "/var/log/app.log", level, line, "{}", line)


def _search(store: TelemetryStore, text: str | None, **filters: object) -> list[str]:
    query = replace(LogQuery(TEAM, None, text, None, None, None, None, 1000), **filters)
    return [log.line for log in store.query_logs(query)]


@pytest.fixture
def logged(store: TelemetryStore) -> TelemetryStore:
    store.insert_logs([_log(DAY_START + index, line) for index, line in enumerate(LINES)])
    store.insert_logs([_log(DAY_START + 5, "timeout in another team", team=OTHER_TEAM)])
    return store


@pytest.mark.parametrize(("text", "expected"), [
    ("timeout", ["read_timeout=5 exceeded", "TIMEOUT after 30s"]),
    ("TimeOut", ["read_timeout=5 exceeded", "TIMEOUT after 30s"]),
    ("connection TIMED", ["upstream timed out (110: Connection timed out) while reading"]),
    ("upstream refused", ["Connection refused by upstream"]),
    ("/var/log/nginx/error.log", ["opened /var/log/nginx/error.log"]),
    ("nginx", ["opened /var/log/nginx/error.log"]),
    ("user_id=42", ["user_id=42 logged in"]),
    ("a+b (x) [y] {z} $HOME ^start", ["retry a+b (x) [y] {z} $HOME ^start"]),
    ("café", ["Café au lait ready"]),
    ("caf", []),
    ("time", []),
    ("  ", list(reversed(LINES))),
])
def test_words_match_whole_and_case_insensitively(logged: TelemetryStore, text: str, expected: list[str]) -> None:
    assert _search(logged, text) == expected


def test_log_filters_combine(store: TelemetryStore) -> None:
    store.insert_logs([_log(DAY_START + 1, "disk full", level="error"),
                       _log(DAY_START + 2, "disk full", level="warning", server=SERVERS[1]),
                       _log(DAY_START + 3, "disk full", level="error", server=SERVERS[2]),
                       _log(DAY_START + 4, "disk ok", level="info")])
    assert _search(store, "disk", levels=["error"]) == ["disk full", "disk full"]
    assert _search(store, "full", server_ids=[SERVERS[1], SERVERS[2]], levels=["warning"]) == ["disk full"]
    assert _search(store, "disk", server_ids=[]) == []
    assert _search(store, None, start=DAY_START + 2, end=DAY_START + 4) == ["disk full", "disk full"]
    assert _search(store, "disk", source="/var/log/other.log") == []
    query = LogQuery(TEAM, None, "disk", ["error", "info"], None, None, None, 1, before=(DAY_START + 4, 0))
    assert store.count_logs(query) == 3  # limit and keyset position do not narrow a count


def test_paging_newest_first_has_no_gaps_or_duplicates(store: TelemetryStore) -> None:
    rng = random.Random(5)
    # Sub-second timestamps that no decimal literal states exactly, many of them shared by several lines
    # in separate INSERTs, so the keyset must compare floats exactly and break ties on the id.
    stamps = [DAY_START + rng.randrange(2000) / 7 for _ in range(600)]
    records = [_log(ts, f"request {n} served" if n % 3 else f"request {n} failed") for n, ts in enumerate(stamps)]
    for first in range(0, len(records), 97):
        store.insert_logs(records[first:first + 97])
    expected = sorted((r.ts, r.line) for r in records if "served" in r.line)[::-1]

    seen, before = [], None
    while True:
        page = store.query_logs(LogQuery(TEAM, [SERVERS[0]], "served", None, None, None, None, 37, before))
        if not page:
            break
        seen.extend(page)
        before = (page[-1].ts, page[-1].id)
    assert [log.ts for log in seen] == [ts for ts, _ in expected]
    assert sorted(log.line for log in seen) == sorted(line for _, line in expected)
    assert len({log.id for log in seen}) == len(seen)
    assert [(log.ts, log.id) for log in seen] == sorted(((log.ts, log.id) for log in seen), reverse=True)


# -- retention --

def _three_days(store: TelemetryStore) -> range:
    """Three days up to DAY_START + DAY, a point every 5 minutes and a log line every 10, of one server."""
    stamps = range(DAY_START - 2 * DAY, DAY_START + DAY, 300)
    store.insert_metrics([MetricPoint(TEAM, SERVERS[0], "load.1", "", ts, 1.0) for ts in stamps])
    store.insert_logs([_log(ts + 0.25, f"tick {ts}") for ts in stamps[::2]])
    return stamps


# Cutoffs in the middle of a day, so that every table has a day that straddles its cutoff.
STRADDLING = Retention(raw_seconds=DAY + 3 * 3600, minute_seconds=2 * DAY - 1800, hour_seconds=DAY + 1,
                       logs_seconds=DAY + 7 * 3600 + 150)


def test_retention_trims_each_tier_at_its_cutoff(store: TelemetryStore) -> None:
    stamps = _three_days(store)
    first, now = stamps[0], DAY_START + DAY
    removed = store.enforce_retention(STRADDLING, now)

    def counted(step: int, tier: Tier) -> dict[int, float]:
        found = series_points(store, step=step, agg=Agg.COUNT, tier=tier, metric="load.1", start=first, end=now)
        return found[SERVERS[0]]

    raw_cutoff = now - STRADDLING.raw_seconds
    assert removed["metrics_raw"] == sum(1 for ts in stamps if ts < raw_cutoff)
    raw = counted(300, Tier.RAW)
    assert sorted(raw) == [ts for ts in stamps if ts >= raw_cutoff]

    minute_cutoff = now - STRADDLING.minute_seconds
    assert sorted(counted(60, Tier.MINUTE)) == [ts for ts in stamps if ts >= minute_cutoff]

    hour_cutoff = now - STRADDLING.hour_seconds  # one second into an hour: that bucket started before it
    assert sorted(counted(3600, Tier.HOUR)) == list(range(hour_cutoff - hour_cutoff % 3600 + 3600, now, 3600))

    logs_cutoff = now - STRADDLING.logs_seconds
    kept = store.query_logs(LogQuery(TEAM, None, None, None, None, None, None, 10_000))
    assert sorted(log.ts for log in kept) == [ts + 0.25 for ts in stamps[::2] if ts + 0.25 >= logs_cutoff]
    assert removed["logs"] == len(stamps[::2]) - len(kept)

    # Nothing left to remove: a second pass finds nothing and changes nothing.
    assert store.enforce_retention(STRADDLING, now) == dict.fromkeys(removed, 0)
    assert counted(300, Tier.RAW) == raw


def test_retention_keeps_everything_newer_than_the_cutoff(store: TelemetryStore) -> None:
    insert_in_batches(store, wave_day())
    removed = store.enforce_retention(Retention(DAY, DAY, DAY, DAY), DAY_START + DAY)
    assert removed == {"metrics_raw": 0, "metrics_1m": 0, "metrics_1h": 0, "logs": 0}
    assert_close(series_points(store, step=3600, agg=Agg.SUM, tier=Tier.HOUR),
                 expected_per_server(wave_day(), 3600, Agg.SUM), "sum")


# -- schema --

def test_migrate_is_idempotent_and_keeps_what_is_stored(store: TelemetryStore) -> None:
    store.insert_metrics([MetricPoint(TEAM, SERVERS[0], "load.1", "", DAY_START, 2.0)])
    store.migrate()
    store.migrate()
    assert store.metric_names(TEAM, SERVERS[0]) == [("load.1", "")]
    found = series_points(store, step=60, agg=Agg.MAX, tier=Tier.RAW, metric="load.1")
    assert found == {SERVERS[0]: {DAY_START: 2.0}}
