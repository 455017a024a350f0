"""Telemetry retention, enforced by the worker: each tier loses what is older than its setting."""

from __future__ import annotations

import time
from datetime import datetime

from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.telemetry.model import TelemetryStore
from hostatlas.telemetry.stores import open_store, retention_of

# Retention deletes in bulk; once every few minutes is plenty, whatever the worker's tick.
RETENTION_EVERY = 300.0
_stores: dict[str, TelemetryStore] = {}
_last_run: dict[str, float] = {}


def enforce_retention(db: Database, settings: Settings, now: datetime) -> int:
    key = settings.clickhouse_url or str(settings.data_dir)
    if time.monotonic() - _last_run.get(key, float("-inf")) < RETENTION_EVERY:
        return 0
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = open_store(settings)
    removed = store.enforce_retention(retention_of(settings), int(now.timestamp()))
    _last_run[key] = time.monotonic()
    return sum(removed.values())
