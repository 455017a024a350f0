"""Sliding windows: what a window aggregate (an alert rule's ``aggregate_window``) was at many past times at once.

A backtest asks what the live evaluation would have seen at every tick of a long range. One
``aggregate_window`` per tick would be thousands of queries; instead the raw points are read once, bucketed
by g = gcd(window, every) seconds (every window is then a whole run of buckets, since ticks and windows both
fall on multiples of g), and each window's value is combined from its buckets. min, max, sum, count and last
combine exactly; avg is the window's sum over its count.

The per-window combination uses van Herk/Gil-Werman blocks (a suffix and a prefix aggregate per block of
one window's length): linear in the buckets whatever the window, and a sum adds only the window's own
buckets, never subtracts running totals, so a huge value elsewhere does not cost precision here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from hostatlas.telemetry.storage.contract import Agg, Series, SeriesQuery, TelemetryStore, Tier, WindowQuery

# The answer holds one value per evaluation time and series, and the work reads one bucket per g seconds
# and series: both are bounded so that a backtest over a long range at a fine step is refused up front.
MAX_EVALUATIONS = 200_000
MAX_BUCKETS = 1_000_000

SeriesKey = tuple[int, str]  # (server_id, canonical labels)
Timeline = list[tuple[int, float | None]]  # (evaluation time, value or None when the window had no point)


def evaluation_times(start: int, end: int, every: int) -> range:
    """Every multiple of ``every`` in [start, end]."""
    first = -(-start // every) * every
    return range(first, end - end % every + 1, every)


def sliding_windows(store: TelemetryStore, *, team_id: int, server_ids: Sequence[int] | None, metric: str,
                    label_filters: dict[str, str], agg: Agg, window: int, every: int, start: int,
                    end: int) -> dict[SeriesKey, Timeline]:
    """For each series with a point in some window: at each evaluation time t (each multiple of ``every`` in
    [start, end]), the ``agg`` of its raw points in [t - window, t), or None when that window has none.

    Exactly what ``aggregate_window`` over [t - window, t) answers at each t, from a few bucketed reads. Raises
    ValueError for a non-positive window or step, an end before the start, or more work than the bounds allow.
    """
    if window <= 0 or every <= 0:
        raise ValueError("window and every must be positive numbers of seconds")
    if end < start:
        raise ValueError("the range ends before it starts")
    times = evaluation_times(start, end, every)
    if not times:
        return {}
    if len(times) > MAX_EVALUATIONS:
        raise ValueError(_too_much(len(times), 1))
    first_window, last_end = times[0] - window, times[-1]
    # Which series have anything in the whole span, and so which servers to read: one grouped query.
    present = store.aggregate_window(WindowQuery(team_id, server_ids, metric, label_filters, first_window, last_end,
                                                 Agg.COUNT))
    if not present:
        return {}
    width = math.gcd(window, every)
    buckets = (last_end - first_window) // width
    if len(times) * len(present) > MAX_EVALUATIONS or buckets * len(present) > MAX_BUCKETS:
        raise ValueError(_too_much(len(times), len(present)))
    servers = sorted({value.server_id for value in present})

    def read(read_agg: Agg) -> dict[SeriesKey, Series]:
        found = store.query_series(SeriesQuery(team_id, servers, metric, label_filters, first_window, last_end, width,
                                               read_agg, Tier.RAW))
        return {(series.server_id, series.labels): series for series in found}

    reads = {read_agg: read(read_agg) for read_agg in ((Agg.SUM, Agg.COUNT) if agg is Agg.AVG else (agg,))}
    span = window // width
    # Window for time t covers buckets [(t - window - first_window) / width, ... + span): its start index.
    starts = [(t - window - first_window) // width for t in times]
    answer: dict[SeriesKey, Timeline] = {}
    # Points arriving between the reads may give one read a series the other lacks: that one is empty there.
    for key in sorted({key for found in reads.values() for key in found}):
        values = _windows(agg, {a: _dense(found.get(key), first_window, width, buckets) for a, found in reads.items()},
                          span, starts)
        if any(value is not None for value in values):
            answer[key] = list(zip(times, values, strict=True))
    return answer


def _too_much(times: int, series: int) -> str:
    return (f"this range needs {times} evaluation times for {series} series (and their buckets), more than the "
            f"{MAX_EVALUATIONS} evaluations or {MAX_BUCKETS} buckets allowed: shorten the range or lengthen the step")


def _dense(series: Series | None, base: int, width: int, size: int) -> list[float | None]:
    """The series' bucket values by bucket index from ``base``, None for an empty bucket."""
    dense: list[float | None] = [None] * size
    for bucket, value in series.points if series else ():
        dense[(bucket - base) // width] = value
    return dense


def _windows(agg: Agg, dense: dict[Agg, list[float | None]], span: int,
             starts: list[int]) -> list[float | None]:
    if agg is Agg.LAST:
        return _last(dense[Agg.LAST], span, starts)
    if agg is Agg.AVG:
        sums, counts = dense[Agg.SUM], dense[Agg.COUNT]
        total = _sliding(sums, span, starts, _add)
        number = _sliding(counts, span, starts, _add)
        return [None if s is None or not n else s / n for s, n in zip(total, number, strict=True)]
    return _sliding(dense[agg], span, starts, _COMBINE[agg])


def _add(left: float, right: float) -> float:
    return left + right


def _min(left: float, right: float) -> float:
    return min(left, right)


def _max(left: float, right: float) -> float:
    return max(left, right)


_COMBINE: dict[Agg, Callable[[float, float], float]] = {Agg.MIN: _min, Agg.MAX: _max, Agg.SUM: _add, Agg.COUNT: _add}


def _merge(combine: Callable[[float, float], float], left: float | None, right: float | None) -> float | None:
    if left is None:
        return right
    if right is None:
        return left
    return combine(left, right)


def _sliding(values: list[float | None], span: int, starts: list[int],
             combine: Callable[[float, float], float]) -> list[float | None]:
    """The combination of values[i:i + span] for each i in ``starts`` (None when all are None).

    Blocks of ``span`` buckets: a window starting inside a block is that block's suffix from i plus the next
    block's prefix up to i + span - 1.
    """
    size = len(values)
    prefix: list[float | None] = [None] * size
    suffix: list[float | None] = [None] * size
    for block in range(0, size, span):
        stop = min(block + span, size)
        running: float | None = None
        for index in range(block, stop):
            running = prefix[index] = _merge(combine, running, values[index])
        running = None
        for index in range(stop - 1, block - 1, -1):
            running = suffix[index] = _merge(combine, values[index], running)
    result: list[float | None] = []
    for first in starts:
        last = first + span - 1
        if first % span == 0:
            result.append(suffix[first])  # the window is exactly one block
        else:
            result.append(_merge(combine, suffix[first], prefix[last]))
    return result


def _last(values: list[float | None], span: int, starts: list[int]) -> list[float | None]:
    """The value of the newest non-empty bucket of each window (that bucket's own last point)."""
    newest: list[int] = []
    latest = -1
    for index, value in enumerate(values):
        if value is not None:
            latest = index
        newest.append(latest)
    result: list[float | None] = []
    for first in starts:
        found = newest[first + span - 1]
        result.append(values[found] if found >= first else None)
    return result
