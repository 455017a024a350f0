"""Judging and decoding agent telemetry batches: decode once with orjson, check every entry, keep the good ones.

A bad entry (a value no float64 holds finitely, a timestamp too far from now, a malformed label, text
holding NUL or lone surrogates) is dropped on its own and reported; the rest of the batch is kept. Only
a body that is not a batch at all (not JSON: 400, wrong top-level shape: 422) refuses the whole request.

The same judge runs in the request (``parse=False``) and in the storer, so whatever it accepts, the
storer can store: every number in a decoded document is one a float64 holds (non-finite ones stay
floats, which the checks refuse), and every string is valid UTF-8 or checked for lone surrogates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from hostatlas.errors import InvalidInput, MalformedBody
from hostatlas.http.types import text_problem
from hostatlas.settings import Settings
from hostatlas.telemetry.ingest.logparse import parse_line
from hostatlas.telemetry.ingest.spool import Frame, Kind
from hostatlas.telemetry.storage.contract import LogRecord, MetricPoint, TelemetryStore
from hostatlas.telemetry.storage.series import LABEL_NAME, MAX_LABEL_VALUE, MAX_LABELS, METRIC_NAME, canonical_labels

MAX_REPORTED_PROBLEMS = 100


@dataclass(frozen=True)
class Limits:
    max_entries: int
    max_age: float
    max_future: float
    max_line_bytes: int = 16_384


def limits_of(settings: Settings) -> dict[Kind, Limits]:
    age, future = settings.telemetry_max_age, settings.telemetry_max_future
    return {Kind.METRICS: Limits(settings.metrics_max_points, age, future),
            Kind.LOGS: Limits(settings.logs_max_entries, age, future, settings.log_line_max_bytes)}


@dataclass
class Verdict:
    """What a batch came to: accepted rows and, per dropped entry, where it was and why."""

    accepted: int = 0
    dropped: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    def drop(self, reason: str, message: str, **where: int) -> None:
        self.dropped += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append({**where, "reason": reason, "message": message})

    def answer(self) -> dict[str, Any]:
        """The agent's answer (``IngestResult``'s shape), built without a model on the fast path."""
        return {"accepted": self.accepted, "dropped": self.dropped, "problems": self.problems}


def _load(body: bytes) -> tuple[Any, bool]:
    """The document, and whether its strings are certainly valid UTF-8 (orjson accepts nothing else)."""
    try:
        return orjson.loads(body), True
    except orjson.JSONDecodeError:
        pass
    try:
        # orjson refuses the whole document for one bad byte or number; the stdlib keeps such bytes as
        # lone surrogates and takes NaN, Infinity and 1e400 (as float nan/inf, which the checks refuse),
        # so the entries holding them can be dropped one by one.
        return json.loads(body.decode("utf-8", "surrogateescape"), parse_int=_json_int), False
    except (ValueError, RecursionError):
        raise MalformedBody("malformed_json", "The body is not valid JSON") from None


# Longer integers may not fit a float64 (10**309 does not) nor Python's int conversion limit (4,300 digits).
_SAFE_INT_DIGITS = 300


def _json_int(text: str) -> int | float:
    """An integer literal as the stdlib reads it, except that one past float range becomes ±inf."""
    return int(text) if len(text) <= _SAFE_INT_DIGITS else float(text)


def _list_field(document: Any, name: str) -> list[Any]:
    if not isinstance(document, dict) or not isinstance(document.get(name), list):
        raise InvalidInput.single(name, "required", f"Send an object with a '{name}' array")
    return list(document[name])


def _timestamp_problem(ts: Any, now: float, limits: Limits) -> str | None:
    if type(ts) not in _NUMBER or not math.isfinite(ts):
        return "invalid_timestamp"
    if ts < now - limits.max_age:
        return "too_old"
    if ts > now + limits.max_future:
        return "in_the_future"
    return None


def _labels_problem(labels: Any) -> str | None:
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        return f"labels must be an object of at most {MAX_LABELS} string values"
    for key, value in labels.items():
        if not LABEL_NAME.match(key):
            return f"label name {key[:64]!r} is not [a-z_][a-z0-9_]*"
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE or "," in value or "=" in value:
            return f"label {key!r} must be a string of at most {MAX_LABEL_VALUE} characters without ',' or '='"
        problem = text_problem(value)
        if problem:
            return f"label {key!r} {problem}"
    return None


def decode_metrics(body: bytes, *, team_id: int, server_id: int, now: float, limits: Limits,
                   parse: bool = True) -> tuple[list[MetricPoint], Verdict]:
    """With ``parse=False`` only judge the points (the verdict), and make no rows: the request path."""
    verdict, points = Verdict(), list[MetricPoint]()
    oldest, newest, room = now - limits.max_age, now + limits.max_future, limits.max_entries
    for index, series in enumerate(_list_field(_load(body)[0], "series")):
        if not isinstance(series, dict) or not isinstance(series.get("metric"), str) \
                or not METRIC_NAME.match(series["metric"]):
            verdict.drop("invalid_metric", "metric must be a name like cpu.percent", series=index)
            continue
        label_problem, labels = _series_labels(series.get("labels"))
        if label_problem or not isinstance(series.get("points"), list):
            verdict.drop("invalid_series", label_problem or "points must be an array", series=index)
            continue
        metric = series["metric"]
        for position, point in enumerate(series["points"]):
            if verdict.accepted >= room:
                verdict.drop("batch_limit", f"more than {room} points in one batch", series=index, point=position)
                continue
            # The common case, checked inline: a pair of numbers, the value finite (x - x is 0 only then),
            # the time within bounds (comparisons with NaN are false). Anything else takes the slow path.
            if type(point) is list and len(point) == 2 and type(point[1]) in _NUMBER and type(point[0]) in _NUMBER \
                    and point[1] - point[1] == 0 and oldest <= point[0] <= newest:
                verdict.accepted += 1
                if parse:
                    points.append(MetricPoint(team_id, server_id, metric, labels, int(point[0]), float(point[1])))
                continue
            problem = _point_problem(point, now, limits) or "invalid_point"
            verdict.drop(problem, _POINT_MESSAGES[problem], series=index, point=position)
    return points, verdict


_NUMBER = frozenset({int, float})
# Agents send the same few label sets every batch: validate and canonicalise each once.
_LABEL_CACHE: dict[tuple[tuple[Any, Any], ...], tuple[str | None, str]] = {}
_LABEL_CACHE_SIZE = 50_000


def _series_labels(labels: Any) -> tuple[str | None, str]:
    """(problem, canonical label string) for a series' labels; a missing or empty set is ""."""
    if not labels and (labels is None or isinstance(labels, dict)):
        return None, ""
    if not isinstance(labels, dict):
        return _labels_problem(labels), ""
    try:
        key = tuple(labels.items())
        cached = _LABEL_CACHE.get(key)
    except TypeError:  # an unhashable value: certainly a problem, which _labels_problem names
        return _labels_problem(labels), ""
    if cached is None:
        problem = _labels_problem(labels)
        cached = (problem, "" if problem else canonical_labels(labels))
        if len(_LABEL_CACHE) >= _LABEL_CACHE_SIZE:
            _LABEL_CACHE.clear()
        _LABEL_CACHE[key] = cached
    return cached


_POINT_MESSAGES = {
    "invalid_point": "a point is [unix_seconds, value]",
    "invalid_value": "the value must be a finite number",
    "invalid_timestamp": "the timestamp must be unix seconds",
    "too_old": "the timestamp is older than the platform accepts",
    "in_the_future": "the timestamp is too far in the future",
}


def _point_problem(point: Any, now: float, limits: Limits) -> str | None:
    if not isinstance(point, list) or len(point) != 2:
        return "invalid_point"
    value = point[1]
    if type(value) not in _NUMBER or not math.isfinite(value):
        return "invalid_value"
    return _timestamp_problem(point[0], now, limits)


def decode_logs(body: bytes, *, team_id: int, server_id: int, now: float, limits: Limits,
                parse: bool = True) -> tuple[list[LogRecord], Verdict]:
    """With ``parse=False`` only judge the entries (the verdict), and make no records: the request path."""
    verdict, records = Verdict(), list[LogRecord]()
    document, valid_utf8 = _load(body)
    for index, entry in enumerate(_list_field(document, "entries")):
        if index >= limits.max_entries:
            verdict.drop("batch_limit", f"more than {limits.max_entries} entries in one batch", entry=index)
            continue
        problem = _entry_problem(entry, now, limits, valid_utf8)
        if problem:
            verdict.drop(problem[0], problem[1], entry=index)
            continue
        verdict.accepted += 1
        if parse:
            records.append(_record(entry, team_id, server_id, now, limits))
    return records, verdict


def decode_frame(frame: Frame, limits: Limits, *, parse: bool = True) -> tuple[list[Any], Verdict]:
    """The rows and verdict of one agent batch, judged as of the time it was received."""
    decode = decode_metrics if frame.kind is Kind.METRICS else decode_logs
    rows, verdict = decode(frame.body, team_id=frame.team_id, server_id=frame.server_id,
                           now=frame.received_at, limits=limits, parse=parse)
    return list(rows), verdict


def insert(store: TelemetryStore, kind: Kind, rows: Sequence[Any]) -> None:
    """One INSERT of rows ``decode_frame`` made for frames of one kind (``MetricPoint`` or ``LogRecord``)."""
    if kind is Kind.METRICS:
        store.insert_metrics(rows)
    else:
        store.insert_logs(rows)


def _entry_problem(entry: Any, now: float, limits: Limits, valid_utf8: bool) -> tuple[str, str] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("line"), str):
        return "invalid_entry", "an entry is {ts, source, line} with line a string"
    line, source = entry["line"], entry.get("source", "")
    if not isinstance(source, str) or len(source) > 1024:
        return "invalid_source", "source must be a path of at most 1024 characters"
    # orjson made only valid UTF-8, so then NUL is all there is to look for (a fast scan in C).
    if not valid_utf8 or "\x00" in line or "\x00" in source:
        unstorable = _text_problem("line", line) or _text_problem("source", source)
        if unstorable:
            return unstorable
    if "ts" in entry:
        problem = _timestamp_problem(entry["ts"], now, limits)
        if problem:
            return problem, _POINT_MESSAGES[problem]
    return None


def _text_problem(name: str, text: str) -> tuple[str, str] | None:
    problem = text_problem(text)
    if problem is None:
        return None
    return ("invalid_text" if "\x00" in text else "invalid_utf8"), f"the {name} {problem}"


def _record(entry: dict[str, Any], team_id: int, server_id: int, now: float, limits: Limits) -> LogRecord:
    line: str = entry["line"]
    if len(line) > limits.max_line_bytes:
        line = line.encode("utf-8")[: limits.max_line_bytes].decode("utf-8", "ignore")
    source = entry.get("source", "")
    parsed = parse_line(line, source)
    received = float(entry.get("ts", now))
    # The line's own time is the event's; trust it only when it is plausible, else when the agent read it.
    ts = parsed.ts if parsed.ts is not None and _timestamp_problem(parsed.ts, now, limits) is None else received
    return LogRecord(team_id, server_id, ts, source, parsed.level, parsed.message,
                     orjson.dumps(parsed.fields).decode(), line)
