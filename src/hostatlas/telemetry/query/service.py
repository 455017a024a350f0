"""Metric and log reads for the REST API: which servers, which window, the store's answer and its shapes.

Each route calls one function here (``server_metrics``, ``fleet_metrics``, ``metric_names``,
``search_logs``). Every parameter is checked, and the team's servers looked up, before the store is
asked: ``caught_up`` gives the store once it holds every batch acknowledged before the read
(``Telemetry.caught_up``), which may wait, so a request that is refused or needs no store never does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy.orm import Session

from hostatlas.errors import InvalidInput
from hostatlas.http import cursors
from hostatlas.http.types import MAX_INT64, MAX_UNIX, MIN_UNIX, text_problem
from hostatlas.servers.models import Server
from hostatlas.servers.schemas import ServerRef
from hostatlas.servers.service import get_server, listing
from hostatlas.telemetry.query.params import (
    LogParams,
    Problems,
    SeriesParams,
    Window,
    check_levels,
    parse_time,
    series_window,
)
from hostatlas.telemetry.schemas import LogOut, MetricName, SeriesOut
from hostatlas.telemetry.storage.contract import (
    Agg,
    LogQuery,
    Retention,
    Series,
    SeriesQuery,
    StoredLog,
    TelemetryStore,
)
from hostatlas.telemetry.storage.series import label_pairs

T = TypeVar("T")
# The store once it holds every batch acknowledged so far; calling it may wait (see the module's docstring).
StoreAccess = Callable[[], TelemetryStore]


@dataclass(frozen=True)
class SeriesAnswer:
    series: list[SeriesOut]
    window: Window
    agg: Agg


@dataclass(frozen=True)
class Listed(Generic[T]):
    """One page of a list, the total across pages, and the cursor of the next page (None on the last)."""

    items: list[T]
    total: int
    next_cursor: str | None


def server_metrics(session: Session, caught_up: StoreAccess, *, team_id: int, server_id: int,
                   params: SeriesParams, retention: Retention, now: float) -> SeriesAnswer:
    """One of the team's servers' series of a metric (404 for another team's server)."""
    server = get_server(session, team_id=team_id, server_id=server_id)
    return _metrics(caught_up, team_id, {server.id: server.hostname}, params, merge=False, retention=retention,
                    now=now)


def fleet_metrics(session: Session, caught_up: StoreAccess, *, team_id: int, server_ids: Sequence[int] | None,
                  tag: str | None, merge: bool, params: SeriesParams, retention: Retention,
                  now: float) -> SeriesAnswer:
    """A metric across the team's servers (by id and/or tag, all otherwise), per server or ``merge``d."""
    servers = team_servers(session, team_id, ids=server_ids, tag=tag)
    return _metrics(caught_up, team_id, servers, params, merge=merge, retention=retention, now=now)


def _metrics(caught_up: StoreAccess, team_id: int, servers: dict[int, str], params: SeriesParams, *, merge: bool,
             retention: Retention, now: float) -> SeriesAnswer:
    window, labels = series_window(start=params.start, end=params.end, step=params.step, labels=params.labels,
                                   now=now, raw_retention=retention.raw_seconds,
                                   minute_retention=retention.minute_seconds, max_points=params.max_points)
    found = _series(caught_up, team_id=team_id, servers=servers, metric=params.metric, labels=labels,
                    window=window, agg=params.agg, merge=merge)
    return SeriesAnswer(found, window, params.agg)


def metric_names(session: Session, caught_up: StoreAccess, *, team_id: int, server_id: int, per_page: int,
                 cursor: str | None) -> Listed[MetricName]:
    """A page of the (metric, labels) pairs one of the team's servers reports, in order."""
    get_server(session, team_id=team_id, server_id=server_id)
    names = caught_up().metric_names(team_id, server_id)
    page, total, next_cursor = page_of_names(names, per_page=per_page, cursor=cursor)
    return Listed([MetricName(metric=metric, labels=label_pairs(labels)) for metric, labels in page], total,
                  next_cursor)


def search_logs(session: Session, caught_up: StoreAccess, *, team_id: int, params: LogParams,
                now: float) -> Listed[LogOut]:
    """A page of the team's logs matching the search, newest first; other teams' server ids simply vanish."""
    servers = team_servers(session, team_id, ids=params.server_ids)
    query = log_query(team_id, list(servers) if params.server_ids else None, q=params.text, levels=params.levels,
                      source=params.source, start=params.start, end=params.end, per_page=params.per_page,
                      cursor=params.cursor, now=now)
    if params.server_ids and not servers:
        return Listed([], 0, None)
    rows, total, next_cursor = page_of_logs(caught_up(), query)
    if not params.server_ids:
        servers = team_servers(session, team_id, ids=sorted({row.server_id for row in rows}))
    return Listed([log_out(row, servers) for row in rows], total, next_cursor)


def team_servers(session: Session, team_id: int, *, ids: Sequence[int] | None = None,
                 tag: str | None = None) -> dict[int, str]:
    """The team's servers (id → hostname), narrowed to ids and/or a tag: other teams' ids simply vanish."""
    stmt = listing(team_id, status=None, tag=tag, q=None)
    if ids:
        stmt = stmt.where(Server.id.in_(ids))
    return {server.id: server.hostname for server in session.scalars(stmt)}


def _series(caught_up: StoreAccess, *, team_id: int, servers: dict[int, str], metric: str,
            labels: dict[str, str], window: Window, agg: Agg, merge: bool) -> list[SeriesOut]:
    if not servers:
        return []
    store = caught_up()

    def ask(which: Agg) -> list[Series]:
        return store.query_series(SeriesQuery(team_id, list(servers), metric, labels, window.start, window.end,
                                              window.step, which, window.tier))

    if not merge:
        return [SeriesOut(metric=s.metric, labels=label_pairs(s.labels),
                          server=ServerRef(id=s.server_id, hostname=servers[s.server_id]), points=s.points)
                for s in ask(agg)]
    return _merged(metric, agg, ask)


def _merged(metric: str, agg: Agg, ask: Callable[[Agg], list[Series]]) -> list[SeriesOut]:
    """Across servers, per label set. An average of averages is wrong, so avg merges sums and counts."""
    if agg is Agg.LAST:
        raise InvalidInput.single("agg", "not_mergeable", "'last' cannot be merged across servers; "
                                                          "use group_by=server")
    per_labels: dict[str, dict[int, list[list[float]]]] = {}
    parts = (Agg.SUM, Agg.COUNT) if agg is Agg.AVG else (agg,)
    for part_index, part in enumerate(parts):
        for s in ask(part):
            buckets = per_labels.setdefault(s.labels, {})
            for bucket, value in s.points:
                buckets.setdefault(bucket, [[] for _ in parts])[part_index].append(value)
    combine: dict[Agg, Callable[[list[list[float]]], float]] = {
        Agg.MIN: lambda v: min(v[0]), Agg.MAX: lambda v: max(v[0]), Agg.SUM: lambda v: sum(v[0]),
        Agg.COUNT: lambda v: sum(v[0]), Agg.AVG: lambda v: sum(v[0]) / sum(v[1]) if sum(v[1]) else 0.0}
    return [SeriesOut(metric=metric, labels=label_pairs(labels), server=None,
                      points=[(bucket, float(combine[agg](values))) for bucket, values in sorted(buckets.items())])
            for labels, buckets in sorted(per_labels.items())]


def log_out(log: StoredLog, servers: dict[int, str]) -> LogOut:
    moment = datetime.fromtimestamp(log.ts, UTC)
    return LogOut(id=log.id, server=ServerRef(id=log.server_id, hostname=servers.get(log.server_id, "")), ts=log.ts,
                  time=moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"), source=log.source,
                  level=log.level, message=log.message, fields=orjson.loads(log.fields), line=log.line)


def _decode_cursor(cursor: str, valid: Callable[[Any], bool]) -> Any:
    """The cursor's JSON value if ``valid`` holds for it; a forged or damaged cursor is a 422."""
    try:
        value = cursors.decode(cursor)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise InvalidInput.single("cursor", "invalid_cursor", "The cursor is not valid for this list")
    return value


def encode_log_cursor(log: StoredLog) -> str:
    return cursors.encode([log.ts, log.id])


def _is_log_position(value: Any) -> bool:
    # (ts, id) exactly as the store compares them: a time within bounds and a row id.
    return (isinstance(value, list) and len(value) == 2 and type(value[0]) in (int, float)
            and MIN_UNIX <= value[0] <= MAX_UNIX and type(value[1]) is int and 1 <= value[1] <= MAX_INT64)


def decode_log_cursor(cursor: str | None) -> tuple[float, int] | None:
    if not cursor:
        return None
    ts, log_id = _decode_cursor(cursor, _is_log_position)
    return float(ts), log_id


def log_query(team_id: int, server_ids: list[int] | None, *, q: str | None, levels: list[str] | None,
              source: str | None, start: str | None, end: str | None, per_page: int, cursor: str | None,
              now: float) -> LogQuery:
    """A log search from its parameters, every bad one named at once (``server_ids`` None: all the team's)."""
    problems = Problems()
    begin = problems.check(lambda: parse_time(start, "from", now))
    finish = problems.check(lambda: parse_time(end, "to", now))
    before = problems.check(lambda: decode_log_cursor(cursor))
    problems.check(lambda: check_levels(levels))
    problems.raise_any()
    return LogQuery(team_id, server_ids, q or None, levels, source, begin, finish, per_page, before)


def page_of_logs(store: TelemetryStore, query: LogQuery) -> tuple[list[StoredLog], int, str | None]:
    rows = store.query_logs(LogQuery(**{**vars(query), "limit": query.limit + 1}))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return rows, store.count_logs(query), encode_log_cursor(rows[-1]) if more and rows else None


def _is_series_name(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(isinstance(part, str) and text_problem(part) is None for part in value))


def page_of_names(names: list[tuple[str, str]], *, per_page: int,
                  cursor: str | None) -> tuple[list[tuple[str, str]], int, str | None]:
    """A page of a server's (metric, labels) pairs in order, after the cursor's pair; and the total."""
    after = tuple(_decode_cursor(cursor, _is_series_name)) if cursor else None
    ordered = sorted(names)
    rest = [name for name in ordered if after is None or name > after]
    page = rest[:per_page]
    return page, len(ordered), cursors.encode(list(page[-1])) if len(rest) > per_page else None
