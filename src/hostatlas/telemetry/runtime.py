"""The telemetry pieces one app process owns: the store and its group-commit writer."""

from __future__ import annotations

from dataclasses import dataclass

from hostatlas.settings import Settings
from hostatlas.telemetry.ingest import Limits
from hostatlas.telemetry.model import TelemetryStore
from hostatlas.telemetry.stores import open_store
from hostatlas.telemetry.writer import TelemetryWriter


@dataclass
class Telemetry:
    store: TelemetryStore
    writer: TelemetryWriter
    metric_limits: Limits
    log_limits: Limits

    @classmethod
    def start(cls, settings: Settings) -> Telemetry:
        store = open_store(settings)
        writer = TelemetryWriter(store, max_rows=settings.telemetry_batch_rows,
                                 max_delay=settings.telemetry_batch_delay)
        age, future = settings.telemetry_max_age, settings.telemetry_max_future
        return cls(store, writer, Limits(settings.metrics_max_points, age, future),
                   Limits(settings.logs_max_entries, age, future, settings.log_line_max_bytes))

    def stop(self) -> None:
        self.writer.close()
        self.store.close()
