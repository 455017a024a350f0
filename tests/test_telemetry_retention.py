"""The worker's telemetry retention job: throttled by the ``now`` it is given, its store opened and closed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.telemetry.storage import retention
from hostatlas.telemetry.storage.contract import MetricPoint, TelemetryStore
from hostatlas.telemetry.storage.embedded import EmbeddedStore
from hostatlas.telemetry.storage.retention import RetentionJob

NOW = datetime(2026, 11, 25, tzinfo=UTC)


class RecordedStore(EmbeddedStore):
    closed = False

    def close(self) -> None:
        super().close()
        self.closed = True


@pytest.fixture
def unused_db(tmp_path: Path) -> Iterator[Database]:
    """The worker hands every job its database; retention never touches it."""
    db = Database(f"sqlite:///{tmp_path / 'unused.db'}")
    yield db
    db.dispose()


def test_retention_runs_once_per_interval_of_the_now_it_is_given_and_closes_its_store(
        tmp_path: Path, unused_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    seed = EmbeddedStore(tmp_path / "telemetry.db")
    seed.migrate()
    moment = int(NOW.timestamp())
    # One raw point just past the raw tier's retention, one well within it.
    seed.insert_metrics([MetricPoint(1, 1, "load.1", "", ts, 1.0)
                         for ts in (moment - settings.retention_raw - 60, moment - 60)])
    seed.close()
    opened: list[RecordedStore] = []

    def open_recorded(given: Settings) -> TelemetryStore:
        store = RecordedStore(given.data_dir / "telemetry.db")
        store.migrate()
        opened.append(store)
        return store

    monkeypatch.setattr(retention, "open_store", open_recorded)
    job = RetentionJob(every=300)
    assert job(unused_db, settings, NOW) == 1  # as of the given now, whatever the wall clock says
    # Within the interval of the given now: nothing done, no store even opened.
    assert job(unused_db, settings, NOW + timedelta(seconds=299)) == 0 and len(opened) == 1
    assert job(unused_db, settings, NOW + timedelta(seconds=300)) == 0 and len(opened) == 2
    # A clock set back runs it again rather than waiting for the clock to catch up.
    assert job(unused_db, settings, NOW - timedelta(hours=1)) == 0 and len(opened) == 3
    assert all(store.closed for store in opened)
