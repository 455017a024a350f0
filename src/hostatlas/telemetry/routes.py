"""Telemetry on the REST API: metric series by time range, metric names, and log search.

Each handler parses its parameters, calls one function of query/service.py and shapes its answer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Security
from pydantic import StringConstraints

from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.clock import now_unix
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import Page, PageMeta
from hostatlas.http.types import IdPath, IdQuery, Storable
from hostatlas.telemetry.query import service
from hostatlas.telemetry.query.params import LogParams, SeriesParams
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.schemas import LogOut, MetricName, MetricsAnswer, MetricsMeta
from hostatlas.telemetry.storage.contract import Agg, Retention
from hostatlas.telemetry.storage.stores import retention_of

router = APIRouter(prefix="/api/v1", tags=["Telemetry"])

MetricsReader = Annotated[Principal, Security(authenticated, scopes=["metrics:read"])]
LogsReader = Annotated[Principal, Security(authenticated, scopes=["logs:read"])]
# Parsed and bounded by telemetry/query/params.py, which names every bad one at once. A required parameter takes
# its Query() inside Annotated: FastAPI drops these types' constraints when Query(...) is the default.
TimeParam = Annotated[str, StringConstraints(max_length=64)]
StepParam = Annotated[str, StringConstraints(max_length=16)]
MetricParam = Annotated[str, StringConstraints(max_length=128), Storable]
CursorParam = Annotated[str, StringConstraints(max_length=1024), Storable]
# Query parameters that are not label filters.
RESERVED = frozenset({"metric", "from", "to", "step", "agg", "server_id", "tag", "group_by"})
TIME_HELP = "ISO-8601, unix seconds, 'now' or relative (-1h, -30m, -7d); between 1970 and 2200"
STEP_HELP = "Seconds or 15s, 5m, 1h (at most 366 days); default: about 300 points"


def _caught_up(request: Request) -> service.StoreAccess:
    """The store, once it holds every batch acknowledged before the read (``Telemetry.caught_up``)."""
    return runtime.current(request).part(Telemetry).caught_up


def _retention(request: Request) -> Retention:
    return retention_of(runtime.current(request).settings)


def _series_params(request: Request, *, metric: str, start: str | None, end: str | None, step: str | None,
                   agg: Agg) -> SeriesParams:
    labels = {key: value for key, value in request.query_params.items() if key not in RESERVED}
    return SeriesParams(metric=metric, start=start, end=end, step=step, agg=agg, labels=labels)


def _answer(found: service.SeriesAnswer) -> MetricsAnswer:
    window = found.window
    return MetricsAnswer(data=found.series, meta=MetricsMeta(from_=window.start, to=window.end, step=window.step,
                                                             agg=found.agg.value, tier=window.tier.value))


@router.get("/servers/{server_id}/metrics", response_model=MetricsAnswer, response_model_by_alias=True,
            responses=errors(404, 422), summary="A server's metric over time",
            description="Other query parameters filter labels, e.g. `mount=/`. The step grows so that no series "
                        "has more than 1,500 points; older ranges are answered from the 1-minute or 1-hour "
                        "rollups, which keep min, max, sum, count and last, so spikes survive.")
def server_metrics(server_id: IdPath, request: Request, principal: MetricsReader, session: DbSession,
                   metric: Annotated[MetricParam, Query(examples=["cpu.percent"])],
                   from_: TimeParam | None = Query(None, alias="from", description=TIME_HELP),
                   to: TimeParam | None = Query(None, description=TIME_HELP),
                   step: StepParam | None = Query(None, description=STEP_HELP),
                   agg: Agg = Query(Agg.AVG)) -> MetricsAnswer:
    params = _series_params(request, metric=metric, start=from_, end=to, step=step, agg=agg)
    return _answer(service.server_metrics(session, _caught_up(request), team_id=principal.team_id,
                                          server_id=server_id, params=params, retention=_retention(request),
                                          now=now_unix()))


@router.get("/metrics", response_model=MetricsAnswer, response_model_by_alias=True, responses=errors(422),
            summary="A metric across servers",
            description="Servers by `server_id` (repeatable) and/or `tag`; all the team's servers otherwise. "
                        "`group_by=server` (default) answers one series per server and label set; "
                        "`group_by=none` merges servers per label set.")
def fleet_metrics(request: Request, principal: MetricsReader, session: DbSession,
                  metric: Annotated[MetricParam, Query()], server_id: list[IdQuery] | None = Query(None),
                  tag: Annotated[str, StringConstraints(max_length=64), Storable] | None = Query(None),
                  from_: TimeParam | None = Query(None, alias="from", description=TIME_HELP),
                  to: TimeParam | None = Query(None, description=TIME_HELP),
                  step: StepParam | None = Query(None, description=STEP_HELP),
                  agg: Agg = Query(Agg.AVG),
                  group_by: Literal["server", "none"] = Query("server")) -> MetricsAnswer:
    params = _series_params(request, metric=metric, start=from_, end=to, step=step, agg=agg)
    return _answer(service.fleet_metrics(session, _caught_up(request), team_id=principal.team_id,
                                         server_ids=server_id, tag=tag, merge=group_by == "none", params=params,
                                         retention=_retention(request), now=now_unix()))


@router.get("/metrics/names", response_model=Page[MetricName], responses=errors(404, 422),
            summary="What a server reports", description="(metric, labels) pairs, ordered by metric then labels.")
def metric_names(request: Request, principal: MetricsReader, session: DbSession,
                 server_id: Annotated[IdQuery, Query()],
                 per_page: int = Query(100, ge=1, le=100), cursor: CursorParam | None = Query(None)
                 ) -> Page[MetricName]:
    names = service.metric_names(session, _caught_up(request), team_id=principal.team_id, server_id=server_id,
                                 per_page=per_page, cursor=cursor)
    return Page(data=names.items, meta=PageMeta(total=names.total, per_page=per_page, next_cursor=names.next_cursor))


@router.get("/logs", response_model=Page[LogOut], responses=errors(422), summary="Search logs",
            description="Newest first. `q`: every word must occur in the line (whole words, any case).")
def search_logs(request: Request, principal: LogsReader, session: DbSession,
                q: Annotated[str, StringConstraints(max_length=500), Storable] | None = Query(None),
                level: list[Annotated[str, StringConstraints(max_length=16)]] | None = Query(None),
                source: Annotated[str, StringConstraints(max_length=1024), Storable] | None = Query(None),
                server_id: list[IdQuery] | None = Query(None),
                from_: TimeParam | None = Query(None, alias="from", description=TIME_HELP),
                to: TimeParam | None = Query(None, description=TIME_HELP),
                per_page: int = Query(25, ge=1, le=100), cursor: CursorParam | None = Query(None)) -> Page[LogOut]:
    params = LogParams(server_ids=server_id, text=q, levels=level, source=source, start=from_, end=to,
                       per_page=per_page, cursor=cursor)
    logs = service.search_logs(session, _caught_up(request), team_id=principal.team_id, params=params,
                               now=now_unix())
    return Page(data=logs.items, meta=PageMeta(total=logs.total, per_page=per_page, next_cursor=logs.next_cursor))
