"""Telemetry on the REST API: metric series by time range, metric names, and log search."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Security
from pydantic import StringConstraints

from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import Page, PageMeta
from hostatlas.http.types import IdPath, IdQuery, Storable
from hostatlas.servers.service import get_server
from hostatlas.telemetry import service
from hostatlas.telemetry.model import Agg, TelemetryStore
from hostatlas.telemetry.query import series_window
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.schemas import LogOut, MetricName, MetricsAnswer, MetricsMeta
from hostatlas.telemetry.series import label_pairs

router = APIRouter(prefix="/api/v1", tags=["Telemetry"])

MetricsReader = Annotated[Principal, Security(authenticated, scopes=["metrics:read"])]
LogsReader = Annotated[Principal, Security(authenticated, scopes=["logs:read"])]
# Parsed and bounded by telemetry/query.py, which names every bad one at once. A required parameter takes
# its Query() inside Annotated: FastAPI drops these types' constraints when Query(...) is the default.
TimeParam = Annotated[str, StringConstraints(max_length=64)]
StepParam = Annotated[str, StringConstraints(max_length=16)]
MetricParam = Annotated[str, StringConstraints(max_length=128), Storable]
CursorParam = Annotated[str, StringConstraints(max_length=1024), Storable]
# Query parameters that are not label filters.
RESERVED = frozenset({"metric", "from", "to", "step", "agg", "server_id", "tag", "group_by"})
TIME_HELP = "ISO-8601, unix seconds, 'now' or relative (-1h, -30m, -7d); between 1970 and 2200"
STEP_HELP = "Seconds or 15s, 5m, 1h (at most 366 days); default: about 300 points"


def _store(request: Request) -> TelemetryStore:
    """The store, once it holds every batch acknowledged so far: an agent's write, then a read, sees it."""
    telemetry = runtime.current(request).part(Telemetry)
    telemetry.sync()
    return telemetry.store


def _answer(request: Request, *, team_id: int, servers: dict[int, str], metric: str, start: str | None,
            end: str | None, step: str | None, agg: Agg, merge: bool) -> MetricsAnswer:
    settings = runtime.current(request).settings
    window, labels = series_window(start=start, end=end, step=step, now=time.time(),
                                   labels={key: value for key, value in request.query_params.items()
                                           if key not in RESERVED},
                                   raw_retention=settings.retention_raw, minute_retention=settings.retention_1m)
    data = service.series(_store(request), team_id=team_id, servers=servers, metric=metric, labels=labels,
                          window=window, agg=agg, merge=merge)
    return MetricsAnswer(data=data, meta=MetricsMeta(from_=window.start, to=window.end, step=window.step,
                                                     agg=agg.value, tier=window.tier.value))


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
    server = get_server(session, team_id=principal.team_id, server_id=server_id)
    return _answer(request, team_id=principal.team_id, servers={server.id: server.hostname}, metric=metric,
                   start=from_, end=to, step=step, agg=agg, merge=False)


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
    servers = service.team_servers(session, principal.team_id, ids=server_id, tag=tag)
    return _answer(request, team_id=principal.team_id, servers=servers, metric=metric, start=from_, end=to,
                   step=step, agg=agg, merge=group_by == "none")


@router.get("/metrics/names", response_model=Page[MetricName], responses=errors(404, 422),
            summary="What a server reports", description="(metric, labels) pairs, ordered by metric then labels.")
def metric_names(request: Request, principal: MetricsReader, session: DbSession,
                 server_id: Annotated[IdQuery, Query()],
                 per_page: int = Query(100, ge=1, le=100), cursor: CursorParam | None = Query(None)
                 ) -> Page[MetricName]:
    get_server(session, team_id=principal.team_id, server_id=server_id)
    names = _store(request).metric_names(principal.team_id, server_id)
    page, total, next_cursor = service.page_of_names(names, per_page=per_page, cursor=cursor)
    return Page(data=[MetricName(metric=metric, labels=label_pairs(labels)) for metric, labels in page],
                meta=PageMeta(total=total, per_page=per_page, next_cursor=next_cursor))


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
    servers = service.team_servers(session, principal.team_id, ids=server_id)
    query = service.log_query(principal.team_id, list(servers) if server_id else None, q=q, levels=level,
                              source=source, start=from_, end=to, per_page=per_page, cursor=cursor, now=time.time())
    if server_id and not servers:
        return Page(data=[], meta=PageMeta(total=0, per_page=per_page, next_cursor=None))
    rows, total, next_cursor = service.page_of_logs(_store(request), query)
    if not server_id:
        servers = service.team_servers(session, principal.team_id, ids=sorted({row.server_id for row in rows}))
    return Page(data=[service.log_out(row, servers) for row in rows],
                meta=PageMeta(total=total, per_page=per_page, next_cursor=next_cursor))
