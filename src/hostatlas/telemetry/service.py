"""Metric and log reads for the REST API: which servers, which window, and the answer's shapes."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import orjson
from sqlalchemy.orm import Session

from hostatlas.errors import InvalidInput
from hostatlas.inventory.schemas import ServerRef
from hostatlas.servers.models import Server
from hostatlas.servers.service import listing
from hostatlas.telemetry.model import Agg, LogQuery, Series, SeriesQuery, StoredLog, TelemetryStore
from hostatlas.telemetry.query import Window
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


def encode_log_cursor(log: StoredLog) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([log.ts, log.id])).decode().rstrip("=")


def decode_log_cursor(cursor: str | None) -> tuple[float, int] | None:
    if not cursor:
        return None
    try:
        ts, log_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(ts), int(log_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidInput.single("cursor", "invalid_cursor", "The cursor is not valid for this list") from None


def page_of_logs(store: TelemetryStore, query: LogQuery) -> tuple[list[StoredLog], int, str | None]:
    rows = store.query_logs(LogQuery(**{**vars(query), "limit": query.limit + 1}))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return rows, store.count_logs(query), encode_log_cursor(rows[-1]) if more and rows else None
