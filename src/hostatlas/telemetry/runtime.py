"""The telemetry pieces one app process owns: the store and a group-commit writer per kind.

Metrics and logs get a writer each, so that a slow INSERT of one kind never holds up the other, and
ClickHouse, whose INSERT cost is mostly per part written, receives both in parallel.
"""

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
    metric_writer: TelemetryWriter
    log_writer: TelemetryWriter
    metric_limits: Limits
    log_limits: Limits

    @classmethod
    def start(cls, settings: Settings) -> Telemetry:
        store = open_store(settings)
        def writer() -> TelemetryWriter:
            return TelemetryWriter(store, max_rows=settings.telemetry_batch_rows,
                                   max_delay=settings.telemetry_batch_delay)

        age, future = settings.telemetry_max_age, settings.telemetry_max_future
        return cls(store, writer(), writer(), Limits(settings.metrics_max_points, age, future),
                   Limits(settings.logs_max_entries, age, future, settings.log_line_max_bytes))

    def stop(self) -> None:
        self.metric_writer.close()
        self.log_writer.close()
        self.store.close()
