"""ClickHouseStore against a real ClickHouse (`scripts/clickhouse start`; 18.16 and current releases).

The backend-neutral contract lives in test_telemetry_store.py; these tests add what is particular to
ClickHouse: states merged across INSERTs and background merges, partitions and mutations in retention,
regex word search, ids minted without the database.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import pytest
from clickhouse_driver import Client

from hostatlas.telemetry.clickhouse import ClickHouseStore, _word_pattern, new_log_ids
from hostatlas.telemetry.model import Agg, LogQuery, LogRecord, MetricPoint, Retention, SeriesQuery, Tier

pytestmark = pytest.mark.clickhouse

DAY = 86_400
START = 1_795_564_800  # 2026-11-25T00:00:00Z
TEAM, OTHER_TEAM = 7, 8
SERVERS = (101, 102, 103)
SPIKE_TS = START + 13 * 3600 + 52  # off the 15 s grid, and the newest point of its minute


@pytest.fixture
def store(clickhouse_db_url: str) -> Iterator[ClickHouseStore]:
    backend = ClickHouseStore(clickhouse_db_url)
    backend.migrate()
    yield backend
    backend.close()


@pytest.fixture
def sql(clickhouse_db_url: str) -> Iterator[Client]:
    client = Client.from_url(clickhouse_db_url)
    yield client
    client.disconnect()


def _value(server: int, ts: int) -> float:
    """Known, varied values: a daily wave plus a per-server offset and a sawtooth."""
    return round(50 + 40 * math.sin((ts - START) / 5000) + server % 10 + (ts % 240) / 60, 4)


def _day(metric: str = "cpu.percent", labels: str = "") -> list[MetricPoint]:
    points = [
        MetricPoint(TEAM, server, metric, labels, ts, _value(server, ts))
        for server in SERVERS
        for ts in range(START, START + DAY, 15)
    ]
    points.append(MetricPoint(TEAM, SERVERS[1], metric, labels, SPIKE_TS, 1000.0))
    return points


def _insert(store: ClickHouseStore, points: list[MetricPoint], size: int = 3000) -> None:
    for first in range(0, len(points), size):
        store.insert_metrics(points[first : first + size])


AGGREGATES: dict[Agg, Callable[[list[tuple[int, float]]], float]] = {
    Agg.MIN: lambda v: min(x for _, x in v),
    Agg.MAX: lambda v: max(x for _, x in v),
    Agg.SUM: lambda v: sum(x for _, x in v),
    Agg.COUNT: lambda v: float(len(v)),
    Agg.AVG: lambda v: sum(x for _, x in v) / len(v),
    Agg.LAST: lambda v: max(v)[1],
}


def _expected(points: list[MetricPoint], step: int, agg: Agg) -> dict[int, dict[int, float]]:
    buckets: dict[int, dict[int, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        buckets[p.server_id][p.ts - p.ts % step].append((p.ts, p.value))
    return {
        server: {bucket: AGGREGATES[agg](values) for bucket, values in by_bucket.items()}
        for server, by_bucket in buckets.items()
    }


def _series(
    store: ClickHouseStore,
    step: int,
    agg: Agg,
    tier: Tier,
    *,
    team: int = TEAM,
    metric: str = "cpu.percent",
    labels: dict[str, str] | None = None,
    start: int = START,
    end: int = START + DAY,
) -> dict[int, dict[int, float]]:
    query = SeriesQuery(team, SERVERS, metric, labels or {}, start, end, step, agg, tier)
    return {series.server_id: dict(series.points) for series in store.query_series(query)}


def _assert_close(got: dict[int, dict[int, float]], expected: dict[int, dict[int, float]], label: object) -> None:
    assert got.keys() == expected.keys(), label
    for server, buckets in expected.items():
        assert got[server].keys() == buckets.keys(), (label, server)
        for bucket, value in buckets.items():
            assert math.isclose(got[server][bucket], value, rel_tol=1e-9, abs_tol=1e-9), (label, server, bucket)


@pytest.mark.parametrize(
    ("step", "tier"),
    [(60, Tier.MINUTE), (300, Tier.MINUTE), (3600, Tier.HOUR), (6 * 3600, Tier.HOUR), (120, Tier.RAW)],
)
def test_every_aggregate_matches_the_raw_points(store: ClickHouseStore, step: int, tier: Tier) -> None:
    points = _day()
    # Shuffled batches of odd sizes split buckets across INSERTs and deliver them out of order: the
    # states of one bucket come from several parts and must still merge to the exact answer.
    random.Random(3).shuffle(points)
    _insert(store, points, size=2_777)
    for agg in Agg:
        _assert_close(_series(store, step, agg, tier), _expected(points, step, agg), (agg, step))


def test_answers_do_not_change_when_clickhouse_merges_the_parts(store: ClickHouseStore, sql: Client) -> None:
    points = _day()
    _insert(store, points, size=1_000)
    before = {agg: _series(store, 3600, agg, Tier.MINUTE) for agg in Agg}
    for table in ("metrics_raw", "metrics_1m", "metrics_1h"):
        sql.execute(f"OPTIMIZE TABLE {table} FINAL")
    for agg in Agg:
        # Only the order of float additions may change: exact up to rounding.
        _assert_close(_series(store, 3600, agg, Tier.MINUTE), before[agg], agg)
        _assert_close(_series(store, 3600, agg, Tier.HOUR), _expected(points, 3600, agg), agg)


def test_a_spike_survives_every_rollup_in_max(store: ClickHouseStore) -> None:
    _insert(store, _day())
    hour = SPIKE_TS - SPIKE_TS % 3600
    assert _series(store, 3600, Agg.MAX, Tier.HOUR)[SERVERS[1]][hour] == 1000.0
    assert _series(store, 60, Agg.MAX, Tier.MINUTE)[SERVERS[1]][SPIKE_TS - SPIKE_TS % 60] == 1000.0
    assert _series(store, DAY, Agg.MAX, Tier.HOUR)[SERVERS[1]] == {START: 1000.0}
    assert max(_series(store, DAY, Agg.MAX, Tier.HOUR)[SERVERS[0]].values()) < 1000.0
    # The last value of the spike's minute is the spike: it is the newest point in it.
    assert _series(store, 60, Agg.LAST, Tier.MINUTE)[SERVERS[1]][SPIKE_TS - SPIKE_TS % 60] == 1000.0


def test_a_window_keeps_only_its_buckets(store: ClickHouseStore) -> None:
    _insert(store, _day())
    got = _series(store, 3600, Agg.COUNT, Tier.MINUTE, start=START + 2 * 3600, end=START + 5 * 3600)
    assert got == {server: {START + h * 3600: 240.0 for h in (2, 3, 4)} for server in SERVERS}


def test_label_filters_match_whole_pairs(store: ClickHouseStore) -> None:
    series = {
        "device=sda,mount=/": 1.0,
        "device=sdb,mount=/boot": 2.0,
        "mount=/data": 3.0,
        "device=sda1,mount=/.*": 4.0,
    }
    store.insert_metrics(
        [MetricPoint(TEAM, SERVERS[0], "disk.used_percent", labels, START, v) for labels, v in series.items()]
    )

    def labels_found(filters: dict[str, str]) -> list[str]:
        query = SeriesQuery(TEAM, SERVERS, "disk.used_percent", filters, START, START + 60, 60, Agg.MAX, Tier.RAW)
        return sorted(s.labels for s in store.query_series(query))

    assert labels_found({"mount": "/"}) == ["device=sda,mount=/"]
    assert labels_found({"mount": "/boot", "device": "sdb"}) == ["device=sdb,mount=/boot"]
    assert labels_found({"mount": "/boot", "device": "sda"}) == []
    assert labels_found({"device": "sda"}) == ["device=sda,mount=/"]
    assert labels_found({"mount": "/.*"}) == ["device=sda1,mount=/.*"]
    assert labels_found({"ount": "/"}) == []
    assert labels_found({}) == sorted(series)


def test_teams_never_see_each_others_series(store: ClickHouseStore) -> None:
    # The same server id and metric in two teams: only the team_id tells them apart.
    store.insert_metrics([MetricPoint(TEAM, SERVERS[0], "load.1", "", START, 1.0)])
    store.insert_metrics([MetricPoint(OTHER_TEAM, SERVERS[0], "load.1", "", START, 9.0)])
    store.insert_metrics([MetricPoint(OTHER_TEAM, SERVERS[0], "secret.metric", "", START, 9.0)])
    for tier in Tier:
        step = 3600 if tier is Tier.HOUR else 60
        assert _series(store, step, Agg.MAX, tier, metric="load.1") == {SERVERS[0]: {START: 1.0}}
        assert _series(store, step, Agg.MAX, tier, metric="load.1", team=OTHER_TEAM) == {SERVERS[0]: {START: 9.0}}
    assert store.metric_names(TEAM, SERVERS[0]) == [("load.1", "")]
    assert store.metric_names(OTHER_TEAM, SERVERS[0]) == [("load.1", ""), ("secret.metric", "")]
    assert store.metric_names(TEAM, SERVERS[1]) == []


def test_metric_names_are_distinct_and_sorted(store: ClickHouseStore) -> None:
    _insert(store, _day("mem.used_percent") + _day("disk.used_percent", "mount=/") + _day("cpu.percent"))
    assert store.metric_names(TEAM, SERVERS[2]) == [
        ("cpu.percent", ""),
        ("disk.used_percent", "mount=/"),
        ("mem.used_percent", ""),
    ]


def test_a_step_that_is_not_a_multiple_of_the_tier_is_refused(store: ClickHouseStore) -> None:
    with pytest.raises(ValueError, match="multiple"):
        _series(store, 90, Agg.AVG, Tier.MINUTE)


# -- logs --

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


def _search(store: ClickHouseStore, text: str | None, **filters: object) -> list[str]:
    query = replace(LogQuery(TEAM, None, text, None, None, None, None, 1000), **filters)
    return [log.line for log in store.query_logs(query)]


@pytest.fixture
def logged(store: ClickHouseStore) -> ClickHouseStore:
    store.insert_logs([_log(START + index, line) for index, line in enumerate(LINES)])
    store.insert_logs([_log(START + 5, "timeout in another team", team=OTHER_TEAM)])
    return store


@pytest.mark.parametrize(
    ("text", "expected"),
    [
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
    ],
)
def test_words_match_whole_and_case_insensitively(logged: ClickHouseStore, text: str, expected: list[str]) -> None:
    assert _search(logged, text) == expected


def test_log_filters_combine(store: ClickHouseStore) -> None:
    store.insert_logs(
        [
            _log(START + 1, "disk full", level="error"),
            _log(START + 2, "disk full", level="warning", server=SERVERS[1]),
            _log(START + 3, "disk full", level="error", server=SERVERS[2]),
            _log(START + 4, "disk ok", level="info"),
        ]
    )
    assert _search(store, "disk", levels=["error"]) == ["disk full", "disk full"]
    assert _search(store, "full", server_ids=[SERVERS[1], SERVERS[2]], levels=["warning"]) == ["disk full"]
    assert _search(store, "disk", server_ids=[]) == []
    assert _search(store, None, start=START + 2, end=START + 4) == ["disk full", "disk full"]
    assert _search(store, "disk", source="/var/log/other.log") == []
    query = LogQuery(TEAM, None, "disk", ["error", "info"], None, None, None, 1, before=(START + 4, 0))
    assert store.count_logs(query) == 3  # limit and keyset position do not narrow a count


def test_paging_newest_first_has_no_gaps_or_duplicates(store: ClickHouseStore) -> None:
    rng = random.Random(5)
    # Sub-second timestamps that no decimal literal states exactly, many of them shared by several lines
    # in separate INSERTs, so the keyset must compare floats exactly and break ties on the id.
    stamps = [START + rng.randrange(2000) / 7 for _ in range(600)]
    records = [_log(ts, f"request {n} served" if n % 3 else f"request {n} failed") for n, ts in enumerate(stamps)]
    for first in range(0, len(records), 97):
        store.insert_logs(records[first : first + 97])
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


def test_log_ids_grow_and_never_repeat_within_or_across_batches() -> None:
    batches = [new_log_ids(5000) for _ in range(20)]
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**63 for i in ids)
    assert all(batch == sorted(batch) for batch in batches)


def test_word_patterns_only_demand_boundaries_beside_letters_and_digits() -> None:
    assert _word_pattern("/var/log/") == re.escape("/var/log/")
    assert _word_pattern("-v").startswith(re.escape("-v")) and _word_pattern("-v").endswith("|$)")
    assert _word_pattern("timeout").startswith("(^|") and _word_pattern("timeout").endswith("|$)")


# -- retention --


def _partitions(sql: Client, table: str) -> set[int]:
    rows = sql.execute(
        "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = %(t)s "
        "AND active AND rows > 0",
        {"t": table},
    )
    return {int(row[0]) for row in rows}


def test_retention_drops_old_days_and_trims_the_straddling_one(store: ClickHouseStore, sql: Client) -> None:
    # Three days of points every 5 minutes and a log line every 10 minutes, for one server.
    first = START - 2 * DAY
    stamps = range(first, START + DAY, 300)
    store.insert_metrics([MetricPoint(TEAM, SERVERS[0], "load.1", "", ts, 1.0) for ts in stamps])
    store.insert_logs([_log(ts + 0.25, f"tick {ts}") for ts in stamps[::2]])
    now = START + DAY
    # Cutoffs in the middle of a day, so every table has a partition that straddles its cutoff.
    retention = Retention(raw_seconds=DAY + 3 * 3600, minute_seconds=2 * DAY - 1800, hour_seconds=DAY + 1,
                          logs_seconds=DAY + 7 * 3600 + 150)
    removed = store.enforce_retention(retention, now)

    raw_cutoff = now - retention.raw_seconds
    assert removed["metrics_raw"] == sum(1 for ts in stamps if ts < raw_cutoff)
    raw = _series(store, 300, Agg.COUNT, Tier.RAW, metric="load.1", start=first, end=now)[SERVERS[0]]
    assert sorted(raw) == [ts for ts in stamps if ts >= raw_cutoff]
    assert min(_partitions(sql, "metrics_raw")) == raw_cutoff // DAY

    minute_cutoff = now - retention.minute_seconds
    minute = _series(store, 60, Agg.COUNT, Tier.MINUTE, metric="load.1", start=first, end=now)[SERVERS[0]]
    assert sorted(minute) == [ts for ts in stamps if ts >= minute_cutoff]

    hour_cutoff = now - retention.hour_seconds  # one second into an hour: that bucket started before it
    hour = _series(store, 3600, Agg.COUNT, Tier.HOUR, metric="load.1", start=first, end=now)[SERVERS[0]]
    assert sorted(hour) == list(range(hour_cutoff - hour_cutoff % 3600 + 3600, now, 3600))

    logs_cutoff = now - retention.logs_seconds
    kept = store.query_logs(LogQuery(TEAM, None, None, None, None, None, None, 10_000))
    assert sorted(log.ts for log in kept) == [ts + 0.25 for ts in stamps[::2] if ts + 0.25 >= logs_cutoff]
    assert removed["logs"] == len(stamps[::2]) - len(kept)

    # Nothing left to remove: a second pass finds nothing and changes nothing.
    assert store.enforce_retention(retention, now) == dict.fromkeys(removed, 0)
    assert _series(store, 300, Agg.COUNT, Tier.RAW, metric="load.1", start=first, end=now)[SERVERS[0]] == raw


def test_retention_keeps_everything_newer_than_the_cutoff(store: ClickHouseStore) -> None:
    _insert(store, _day())
    removed = store.enforce_retention(Retention(DAY, DAY, DAY, DAY), START + DAY)
    assert removed == {"metrics_raw": 0, "metrics_1m": 0, "metrics_1h": 0, "logs": 0}
    _assert_close(_series(store, 3600, Agg.SUM, Tier.HOUR), _expected(_day(), 3600, Agg.SUM), "sum")


# -- schema --


def test_migrate_creates_the_database_and_is_idempotent(clickhouse_url: str) -> None:
    parts = urlsplit(clickhouse_url)
    database = f"{parts.path.strip('/')}_fresh"
    url = urlunsplit(parts._replace(path=f"/{database}"))
    store = ClickHouseStore(url)
    try:
        store.migrate()
        store.migrate()
        store.insert_metrics([MetricPoint(TEAM, SERVERS[0], "load.1", "", START, 2.0)])
        assert store.metric_names(TEAM, SERVERS[0]) == [("load.1", "")]
    finally:
        store.close()
        admin = Client.from_url(clickhouse_url)
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.disconnect()


def test_a_database_name_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(ValueError, match="database name"):
        ClickHouseStore("clickhouse://127.0.0.1:9000/bad-name;drop")
