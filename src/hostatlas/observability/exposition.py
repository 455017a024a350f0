"""The Prometheus exposition: one registry per app (never prometheus-client's global one), whose
collectors read their figures at scrape time.

Each collector fails alone: a database that does not answer costs the scrape the database's figures
(and says so in ``hostatlas_database_up``), not the telemetry or request figures. The names are listed
in docs/operations.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from hostatlas.observability.readiness import Sources
from hostatlas.observability.requests import BUCKETS, RequestStats
from hostatlas.pipelines import quarantine

log = structlog.get_logger(__name__)

REQUEST_LABELS = ["method", "route", "status"]
BUCKET_BOUNDS = [*(str(bound) for bound in BUCKETS), "+Inf"]


def registry(sources: Sources, requests: RequestStats) -> CollectorRegistry:
    # No auto-describe: registering must not run a collector (it would query the database at start-up).
    built = CollectorRegistry(auto_describe=False)
    for collector in (PipelineCollector(sources), DatabaseCollector(sources), TelemetryCollector(sources),
                      RequestCollector(requests)):
        built.register(collector)
    return built


class PipelineCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.health = sources.health

    def collect(self) -> Iterable[Metric]:
        successes = CounterMetricFamily("hostatlas_pipeline_successes", "Passes of a pipeline that succeeded",
                                        labels=["pipeline"])
        failures = CounterMetricFamily("hostatlas_pipeline_failures", "Passes of a pipeline that failed",
                                       labels=["pipeline"])
        failing = GaugeMetricFamily("hostatlas_pipeline_failing_seconds",
                                    "Seconds a pipeline has been failing without a success (0: healthy)",
                                    labels=["pipeline"])
        now = time.monotonic()
        for state in self.health.snapshot():
            successes.add_metric([state.name], state.successes)
            failures.add_metric([state.name], state.failures)
            failing.add_metric([state.name], state.failing_for(now))
        return [successes, failures, failing]


class DatabaseCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hostatlas_database_up", "1 when the database answered this scrape")
        quarantined = GaugeMetricFamily("hostatlas_quarantined_items", "Items set aside in the quarantine",
                                        labels=["pipeline"])
        depths = GaugeMetricFamily("hostatlas_queue_depth", "Items waiting in a database-backed queue",
                                   labels=["queue"])
        try:
            with self.sources.db.session(write=False) as session:
                waiting = {summary.pipeline: summary.items for summary in quarantine.counts(session)}
                for queue, depth in self.sources.queue_depths.items():
                    depths.add_metric([queue], depth(session))
        except Exception as exc:
            log.warning("metrics_database_unavailable", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        # A known pipeline with nothing set aside shows 0, so that a dashboard has a series to draw.
        for pipeline in sorted({state.name for state in self.sources.health.snapshot()} | set(waiting)):
            quarantined.add_metric([pipeline], waiting.get(pipeline, 0))
        up.add_metric([], 1)
        yield from (up, quarantined, depths)


class TelemetryCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.backlog = sources.telemetry_backlog

    def collect(self) -> Iterable[Metric]:
        try:
            status = self.backlog()
        except Exception as exc:
            log.warning("metrics_telemetry_unavailable", error=type(exc).__name__)
            return []
        figures = (("backlog_bytes", "Bytes of acknowledged telemetry not yet stored", status.bytes),
                   ("backlog_segments", "Spool segments not yet stored", status.segments),
                   ("backlog_oldest_age_seconds", "Age of the oldest batch not yet stored",
                    status.oldest_age_seconds),
                   ("storer_lag_seconds", "How far the storer is behind the spool", status.storer_lag_seconds))
        return [GaugeMetricFamily(f"hostatlas_telemetry_{name}", documentation, value=value)
                for name, documentation, value in figures]


class RequestCollector(Collector):
    def __init__(self, stats: RequestStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        total = CounterMetricFamily("hostatlas_http_requests", "HTTP requests answered", labels=REQUEST_LABELS)
        latency = HistogramMetricFamily("hostatlas_http_request_duration_seconds",
                                        "Time from a request's arrival to the end of its answer",
                                        labels=REQUEST_LABELS)
        for key, counts in self.stats.snapshot():
            cumulative, buckets = 0.0, []
            for bound, count in zip(BUCKET_BOUNDS, counts[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            total.add_metric(list(key), cumulative)
            latency.add_metric(list(key), buckets, sum_value=counts[-1])
        return [total, latency]
