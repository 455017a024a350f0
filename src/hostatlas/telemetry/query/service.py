"""Metric and log reads for the REST API: which servers, which window, and the answer's shapes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.orm import Session

from hostatlas.errors import InvalidInput
from hostatlas.http import cursors
from hostatlas.http.types import MAX_INT64, MAX_UNIX, MIN_UNIX, text_problem
from hostatlas.servers.models import Server
from hostatlas.servers.schemas import ServerRef
from hostatlas.servers.service import listing
from hostatlas.telemetry.model import Agg, LogQuery, Series, SeriesQuery, StoredLog, TelemetryStore
from hostatlas.telemetry.query import Problems, Window, check_levels, parse_time
from hostatlas.telemetry.schemas import LogOut, SeriesOut
from hostatlas.telemetry.series import label_pairs


def team_servers(session: Session, team_id: int, *, ids: Sequence[int] | None = None,
                 tag: str | None = None) -> dict[int, str]:
    """The team's servers (id → hostname), narrowed to ids and/or a tag: other teams' ids simply vanish."""
    stmt = listing(team_id, status=None, tag=tag, q=None)
    if ids:
        stmt = stmt.where(Server.id.in_(ids))
    return {server.id: server.hostname for server in session.scalars(stmt)}


def series(store: TelemetryStore, *, team_id: int, servers: dict[int, str], metric: str, labels: dict[str, str],
           window: Window, agg: Agg, merge: bool) -> list[SeriesOut]:
    def ask(which: Agg) -> list[Series]:
        return store.query_series(SeriesQuery(team_id, list(servers), metric, labels, window.start, window.end,
                                              window.step, which, window.tier))

    if not servers:
        return []
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
