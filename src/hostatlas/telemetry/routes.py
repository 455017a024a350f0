"""Telemetry on the REST API: metric series by time range, metric names, and log search."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Security

from hostatlas.errors import InvalidInput
from hostatlas.http.deps import DbSession, Principal, authenticated
from hostatlas.http.docs import errors
from hostatlas.http.pagination import Page, PageMeta
from hostatlas.servers.service import get_server
from hostatlas.telemetry import service
from hostatlas.telemetry.model import LEVELS, Agg, LogQuery, TelemetryStore
from hostatlas.telemetry.query import parse_step, parse_time, plan
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.schemas import LogOut, MetricName, MetricsAnswer, MetricsMeta
from hostatlas.telemetry.series import label_pairs

router = APIRouter(prefix="/api/v1", tags=["Telemetry"])

MetricsReader = Annotated[Principal, Security(authenticated, scopes=["metrics:read"])]
LogsReader = Annotated[Principal, Security(authenticated, scopes=["logs:read"])]
# Query parameters that are not label filters.
RESERVED = frozenset({"metric", "from", "to", "step", "agg", "server_id", "tag", "group_by"})
TIME_HELP = "ISO-8601, unix seconds, 'now' or relative (-1h, -30m, -7d)"


def _store(request: Request) -> TelemetryStore:
    """The store, once it holds every batch acknowledged so far: an agent's write, then a read, sees it."""
    telemetry: Telemetry = request.app.state.telemetry
    telemetry.sync()
    return telemetry.store


def _answer(request: Request, *, team_id: int, servers: dict[int, str], metric: str, start: str | None,
            end: str | None, step: str | None, agg: Agg, merge: bool) -> MetricsAnswer:
    settings, now = request.app.state.settings, time.time()
    window = plan(start=parse_time(start, "from", now), end=parse_time(end, "to", now), step=parse_step(step),
                  now=now, raw_retention=settings.retention_raw, minute_retention=settings.retention_1m)
    labels = {key: value for key, value in request.query_params.items() if key not in RESERVED}
    data = service.series(_store(request), team_id=team_id, servers=servers, metric=metric, labels=labels,
                          window=window, agg=agg, merge=merge)
    return MetricsAnswer(data=data, meta=MetricsMeta(from_=window.start, to=window.end, step=window.step,
                                                     agg=agg.value, tier=window.tier.value))


@router.get("/servers/{server_id}/metrics", response_model=MetricsAnswer, response_model_by_alias=True,
            responses=errors(404, 422), summary="A server's metric over time",
            description="Other query parameters filter labels, e.g. `mount=/`. The step grows so that no series "
                        "has more than 1,500 points; older ranges are answered from the 1-minute or 1-hour "
                        "rollups, which keep min, max, sum, count and last, so spikes survive.")
def server_metrics(server_id: int, request: Request, principal: MetricsReader, session: DbSession,
                   metric: str = Query(..., max_length=128, examples=["cpu.percent"]),
                   from_: str | None = Query(None, alias="from", description=TIME_HELP),
                   to: str | None = Query(None, description=TIME_HELP),
                   step: str | None = Query(None, description="Seconds or 15s, 5m, 1h; default: about 300 points"),
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
                  metric: str = Query(..., max_length=128), server_id: list[int] | None = Query(None),
                  tag: str | None = Query(None, max_length=64),
                  from_: str | None = Query(None, alias="from", description=TIME_HELP),
                  to: str | None = Query(None, description=TIME_HELP), step: str | None = Query(None),
                  agg: Agg = Query(Agg.AVG),
                  group_by: Literal["server", "none"] = Query("server")) -> MetricsAnswer:
    servers = service.team_servers(session, principal.team_id, ids=server_id, tag=tag)
    return _answer(request, team_id=principal.team_id, servers=servers, metric=metric, start=from_, end=to,
                   step=step, agg=agg, merge=group_by == "none")


@router.get("/metrics/names", response_model=list[MetricName], responses=errors(404, 422),
            summary="What a server reports")
def metric_names(request: Request, principal: MetricsReader, session: DbSession,
                 server_id: int = Query(...)) -> list[MetricName]:
    get_server(session, team_id=principal.team_id, server_id=server_id)
    return [MetricName(metric=metric, labels=label_pairs(labels))
            for metric, labels in _store(request).metric_names(principal.team_id, server_id)]


@router.get("/logs", response_model=Page[LogOut], responses=errors(422), summary="Search logs",
            description="Newest first. `q`: every word must occur in the line (whole words, any case).")
def search_logs(request: Request, principal: LogsReader, session: DbSession,
                q: str | None = Query(None, max_length=500), level: list[str] | None = Query(None),
                source: str | None = Query(None, max_length=1024), server_id: list[int] | None = Query(None),
                from_: str | None = Query(None, alias="from", description=TIME_HELP),
                to: str | None = Query(None, description=TIME_HELP),
                per_page: int = Query(25, ge=1, le=100), cursor: str | None = Query(None)) -> Page[LogOut]:
    bad_levels = sorted(set(level or []) - set(LEVELS))
    if bad_levels:
        raise InvalidInput.single("level", "invalid_level", f"Levels are {', '.join(LEVELS)}")
    servers = service.team_servers(session, principal.team_id, ids=server_id)
    now = time.time()
    query = LogQuery(principal.team_id, list(servers) if server_id else None, q or None, level, source,
                     parse_time(from_, "from", now), parse_time(to, "to", now), per_page,
                     service.decode_log_cursor(cursor))
    if server_id and not servers:
        return Page(data=[], meta=PageMeta(total=0, per_page=per_page, next_cursor=None))
    rows, total, next_cursor = service.page_of_logs(_store(request), query)
    if not server_id:
        servers = service.team_servers(session, principal.team_id, ids=sorted({row.server_id for row in rows}))
    return Page(data=[service.log_out(row, servers) for row in rows],
                meta=PageMeta(total=total, per_page=per_page, next_cursor=next_cursor))

