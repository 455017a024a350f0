"""ClickHouseStore against a real ClickHouse (`scripts/clickhouse start`; 18.16 and current releases).

Every behaviour of the store contract, which the embedded store must show too, is tested on both in
test_telemetry_store.py. These tests hold what is ClickHouse's own: aggregate states that survive
background merges, day partitions dropped by retention, the database created by migrate, the regex
word patterns and the log ids minted without the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from clickhouse_driver import Client

from hostatlas.telemetry.storage.clickhouse import ClickHouseStore, _word_pattern, new_log_ids
from hostatlas.telemetry.storage.contract import Agg, MetricPoint, Retention, Tier
from tests import telemetry_data as known
from tests.telemetry_data import DAY, DAY_START, SERVERS, TEAM, series_points

pytestmark = pytest.mark.clickhouse


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


def test_answers_do_not_change_when_clickhouse_merges_the_parts(store: ClickHouseStore, sql: Client) -> None:
    points = known.wave_day()
    known.insert_in_batches(store, points, size=1_000)
    before = {agg: series_points(store, step=3600, agg=agg, tier=Tier.MINUTE) for agg in Agg}
    for table in ("metrics_raw", "metrics_1m", "metrics_1h"):
        sql.execute(f"OPTIMIZE TABLE {table} FINAL")
    for agg in Agg:
        # Only the order of float additions may change: exact up to rounding.
        known.assert_close(series_points(store, step=3600, agg=agg, tier=Tier.MINUTE), before[agg], agg)
        known.assert_close(series_points(store, step=3600, agg=agg, tier=Tier.HOUR),
                           known.expected_per_server(points, 3600, agg), agg)


def test_a_step_that_is_not_a_multiple_of_the_tier_is_refused(store: ClickHouseStore) -> None:
    with pytest.raises(ValueError, match="multiple"):
        series_points(store, step=90, agg=Agg.AVG, tier=Tier.MINUTE)


# -- logs --

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


def test_retention_drops_whole_days_before_the_cutoff(store: ClickHouseStore, sql: Client) -> None:
    # Three days of points every 5 minutes for one server; what is kept is tested on every store.
    stamps = range(DAY_START - 2 * DAY, DAY_START + DAY, 300)
    store.insert_metrics([MetricPoint(TEAM, SERVERS[0], "load.1", "", ts, 1.0) for ts in stamps])
    now = DAY_START + DAY
    retention = Retention(raw_seconds=DAY + 3 * 3600, minute_seconds=2 * DAY - 1800, hour_seconds=DAY + 1,
                          logs_seconds=DAY)
    store.enforce_retention(retention, now)
    # The days entirely before the cutoff are dropped partitions; the straddling day is trimmed by a mutation.
    raw_cutoff = now - retention.raw_seconds
    assert min(_partitions(sql, "metrics_raw")) == raw_cutoff // DAY
    raw = series_points(store, step=300, agg=Agg.COUNT, tier=Tier.RAW, metric="load.1", start=stamps[0], end=now)
    assert sorted(raw[SERVERS[0]]) == [ts for ts in stamps if ts >= raw_cutoff]


# -- schema --


def test_migrate_creates_the_database_and_is_idempotent(clickhouse_url: str) -> None:
    parts = urlsplit(clickhouse_url)
    database = f"{parts.path.strip('/')}_fresh"
    url = urlunsplit(parts._replace(path=f"/{database}"))
    store = ClickHouseStore(url)
    try:
        store.migrate()
        store.migrate()
        store.insert_metrics([MetricPoint(TEAM, SERVERS[0], "load.1", "", DAY_START, 2.0)])
        assert store.metric_names(TEAM, SERVERS[0]) == [("load.1", "")]
    finally:
        store.close()
        admin = Client.from_url(clickhouse_url)
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.disconnect()


def test_a_database_name_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(ValueError, match="database name"):
        ClickHouseStore("clickhouse://127.0.0.1:9000/bad-name;drop")
