"""``/readyz`` and ``/metrics`` on an app, with the request-metrics middleware in front of everything."""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict

from hostatlas.observability import exposition, readiness
from hostatlas.observability.readiness import Sources
from hostatlas.observability.requests import RequestMetrics, RequestStats
from hostatlas.settings import Settings

CheckState = Literal["ok", "unreachable", "unknown", "stuck", "items"]


class ReadinessReport(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "status": "degraded", "database": "ok", "quarantine": "items", "pipelines": "ok", "telemetry": "ok",
        "reasons": ["1 item(s) of pipeline servers.checkins wait in the quarantine: "
                    "`hostatlas quarantine list` shows them"]}})

    status: Literal["ok", "degraded"]
    database: CheckState
    quarantine: CheckState
    pipelines: CheckState
    telemetry: CheckState
    reasons: list[str]


def install(app: FastAPI, sources: Sources, settings: Settings) -> RequestStats | None:
    """Call last in the factory: the middleware added last runs first, so it counts every answer. Returns
    the request series (None when metrics are off), for endpoints answering ahead of the middleware stack
    (a front door) to count themselves in."""
    _add_readyz(app, sources, settings.ready_stuck_after)
    if not settings.metrics_enabled:
        return None
    stats = RequestStats()
    _add_metrics(app, exposition.registry(sources, stats), settings.metrics_path)
    app.add_middleware(RequestMetrics, stats=stats)
    return stats


def _add_readyz(app: FastAPI, sources: Sources, stuck_after: float) -> None:
    @app.get("/readyz", tags=["Operations"], summary="Nothing is stuck: the platform is fit to serve",
             response_model=ReadinessReport,
             responses={503: {"model": ReadinessReport, "description": "Degraded: `reasons` says why"}})
    def readyz() -> JSONResponse:
        """503 while the database does not answer, a pipeline has failed for longer than
        `HOSTATLAS_READY_STUCK_AFTER` seconds, telemetry storage is that far behind, or items wait in
        the quarantine; 200 again once the cause is gone."""
        report = readiness.judge(sources, stuck_after=stuck_after)
        return JSONResponse(report.body(), status_code=200 if report.ok else 503)


def _add_metrics(app: FastAPI, registry: CollectorRegistry, path: str) -> None:
    @app.get(path, include_in_schema=False)
    def metrics() -> Response:
        """The Prometheus text exposition (unauthenticated; HOSTATLAS_METRICS_ENABLED=false turns it off)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
