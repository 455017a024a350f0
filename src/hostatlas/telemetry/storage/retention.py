"""Telemetry retention, a job of the worker: each tier loses what is older than its setting."""

from __future__ import annotations

from datetime import datetime

from hostatlas.clock import Throttle
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.telemetry.storage.stores import open_store, retention_of

# Retention deletes in bulk; once every few minutes is plenty, whatever the worker's tick.
RETENTION_EVERY = 300.0


class RetentionJob:
    """A worker job (``hostatlas.jobs``): at most once every ``every`` seconds of the ``now`` it is given,
    open the store the settings name, enforce retention as of that ``now``, and close the store.

    The throttle (``clock.Throttle``) is this object's state, so it lives as long as the worker that runs the job.
    """

    def __init__(self, every: float = RETENTION_EVERY) -> None:
        self.throttle = Throttle(every)

    def __call__(self, db: Database, settings: Settings, now: datetime) -> int:
        if not self.throttle.due(now):
            return 0
        store = open_store(settings)
        try:
            removed = store.enforce_retention(retention_of(settings), int(now.timestamp()))
        finally:
            store.close()
        self.throttle.ran(now)
        return sum(removed.values())
