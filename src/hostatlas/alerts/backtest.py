"""The backtest: when a rule would have fired over a past range of stored telemetry, so a user tunes its threshold
before saving it.

It replays live evaluation exactly: the same grid of instants (multiples of ``HOSTATLAS_ALERT_INTERVAL``), the
same window values (``sliding_windows`` answers at each instant what ``aggregate_window`` would have), the same
``machine.evaluate`` from every series ok at the start of the range. What it cannot replay is the servers' online
state at the time, so a firing that live evaluation attached to a server outage is an interval here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from hostatlas.alerts import machine, service
from hostatlas.alerts.models import AlertStatus, NoData, Operator, Scope
from hostatlas.alerts.schemas import BacktestAnswer, BacktestInterval
from hostatlas.errors import InvalidInput
from hostatlas.telemetry.query.windows import evaluation_times, sliding_windows
from hostatlas.telemetry.storage.contract import Agg, TelemetryStore
from hostatlas.telemetry.storage.series import label_pairs

# A day at the default interval: beyond it an answer is too slow to tune a threshold by.
MAX_EVALUATIONS = 5760
# "Worst" for a peak: the highest value for a rule that fires high, the lowest for one that fires low.
FIRES_LOW = frozenset({Operator.LT, Operator.LE})


@dataclass
class _Open:
    start: datetime
    peak: float | None


@dataclass
class Replay:
    """A backtest's answer with what it replayed: the evaluation instants and, for each series, the window value
    at each of them (None: no data), so the dashboard can draw the metric under the intervals."""

    answer: BacktestAnswer
    times: list[int]
    timelines: dict[machine.SeriesKey, list[float | None]]
    covered: Mapping[int, service.Covered]


def backtest(session: Session, store: TelemetryStore, *, team_id: int, fields: Mapping[str, Any],
             start: datetime, end: datetime, every: int) -> BacktestAnswer:
    """The intervals in which the rule ``fields`` (as for creation) would have fired between ``start`` and ``end``
    on the team's stored data. 422 for a rule that could not be saved, or a range too long to replay."""
    return replay(session, store, team_id=team_id, fields=fields, start=start, end=end, every=every).answer


def replay(session: Session, store: TelemetryStore, *, team_id: int, fields: Mapping[str, Any],
           start: datetime, end: datetime, every: int) -> Replay:
    """``backtest`` with the window values it replayed."""
    values = service.rule_values(fields)
    service.check(session, team_id, values)
    times = _times(start, end, every)
    scope = Scope(values["scope"])
    covered = service.covered_servers(session, team_id, scope, values["server_ids"], values["tags"])
    if not covered or not times:
        return Replay(BacktestAnswer(intervals=[], evaluations=len(times)), times, {}, covered)
    try:
        timelines = sliding_windows(store, team_id=team_id, server_ids=None if scope is Scope.ALL else sorted(covered),
                                    metric=values["metric"], label_filters=dict(values["label_filters"]),
                                    agg=Agg(values["aggregation"]), window=values["window_s"], every=every,
                                    start=int(start.timestamp()), end=int(end.timestamp()))
    except ValueError as exc:
        raise InvalidInput.single("to", "range_too_large", str(exc)) from exc
    timelines = {key: timeline for key, timeline in timelines.items() if key[0] in covered}
    condition = machine.Condition(operator=Operator(values["operator"]), threshold=float(values["threshold"]),
                                  recovery_threshold=values["recovery_threshold"], for_s=values["for_s"],
                                  no_data=NoData(values["no_data"]))
    intervals = _replay(condition, timelines, covered, times)
    return Replay(BacktestAnswer(intervals=intervals, evaluations=len(times)), times,
                  {key: [value for _, value in timeline] for key, timeline in timelines.items()}, covered)


def _times(start: datetime, end: datetime, every: int) -> list[int]:
    if end < start:
        raise InvalidInput.single("to", "range_reversed", "`to` must not be before `from`")
    times = list(evaluation_times(int(start.timestamp()), int(end.timestamp()), every))
    if len(times) > MAX_EVALUATIONS:
        raise InvalidInput.single("to", "range_too_large", f"At most {MAX_EVALUATIONS} evaluations (one every "
                                                           f"{every} s): shorten the range")
    return times


def _replay(condition: machine.Condition, timelines: Mapping[machine.SeriesKey, list[tuple[int, float | None]]],
            covered: Mapping[int, service.Covered], times: list[int]) -> list[BacktestInterval]:
    tracked: dict[machine.SeriesKey, machine.State] = {}
    firing: dict[machine.SeriesKey, _Open] = {}
    intervals: list[BacktestInterval] = []
    low = condition.operator in FIRES_LOW
    for index, tick in enumerate(times):
        at = datetime.fromtimestamp(tick, UTC)
        values = {key: value for key, timeline in timelines.items() if (value := timeline[index][1]) is not None}
        for key, step in machine.evaluate(condition, tracked, values, covered, at).items():
            if step.state.status is AlertStatus.OK:
                tracked.pop(key, None)
            else:
                tracked[key] = step.state
            change = step.change
            if change is not None and change.to_status is AlertStatus.FIRING:
                firing[key] = _Open(at, change.value)
            elif change is not None and change.from_status is AlertStatus.FIRING:
                opened = firing.pop(key)
                intervals.append(_interval(covered, key, opened, at))
            elif key in firing and step.state.last_value is not None:
                opened = firing[key]
                value = step.state.last_value
                if opened.peak is None or (value < opened.peak if low else value > opened.peak):
                    opened.peak = value
    intervals += [_interval(covered, key, opened, None) for key, opened in firing.items()]
    intervals.sort(key=lambda interval: (interval.start, interval.server.id, sorted(interval.labels.items())))
    return intervals


def _interval(covered: Mapping[int, service.Covered], key: machine.SeriesKey, opened: _Open,
              end: datetime | None) -> BacktestInterval:
    return BacktestInterval(server=covered[key[0]].ref, labels=label_pairs(key[1]), start=opened.start, end=end,
                            peak_value=opened.peak)
