"""Opening the telemetry store the settings ask for."""

from __future__ import annotations

from hostatlas.settings import Settings
from hostatlas.telemetry.storage.contract import Retention, TelemetryStore


def open_store(settings: Settings, *, migrate: bool = True) -> TelemetryStore:
    """ClickHouse when HOSTATLAS_CLICKHOUSE_URL is set, else the embedded SQLite store; schema ensured unless
    ``migrate`` is false."""
    store: TelemetryStore
    if settings.clickhouse_url:
        from hostatlas.telemetry.storage.clickhouse import ClickHouseStore

        store = ClickHouseStore(settings.clickhouse_url, cluster=settings.clickhouse_cluster,
                                replicated=settings.clickhouse_replicated,
                                replica_path=settings.clickhouse_replica_path)
    else:
        from hostatlas.telemetry.storage.embedded import EmbeddedStore

        store = EmbeddedStore(settings.data_dir / "telemetry.db")
    if migrate:
        store.migrate()
    return store


def retention_of(settings: Settings) -> Retention:
    return Retention(raw_seconds=settings.retention_raw, minute_seconds=settings.retention_1m,
                     hour_seconds=settings.retention_1h, logs_seconds=settings.retention_logs)

