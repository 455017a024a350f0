"""The alert state machine, pure: a rule's condition, a series' state and what was observed at ``at`` in, the
new state and the change (if any) out. No database and no clock: the worker (``evaluate.py``) and the backtest
(``backtest.py``) call the very same ``step``, so a backtest answers what live evaluation would have done.

``ok → pending`` when the condition holds (straight to ``firing`` when ``for_s`` is 0), ``pending → firing`` once
it has held for ``for_s``, ``pending → ok`` as soon as it stops holding. A firing series resolves only when the
value is past the recovery threshold (hysteresis): a value between the threshold and the recovery threshold
changes nothing. Without a recovery threshold, it resolves when the condition stops holding. No data (``value``
None) follows the rule's policy: ``ok`` resolves, ``alert`` counts as the condition holding, ``keep`` changes
nothing.
"""

from __future__ import annotations

import operator as ops
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from hostatlas.alerts.models import AlertStatus, NoData, Operator

COMPARE: dict[Operator, Callable[[float, float], bool]] = {
    Operator.GT: ops.gt, Operator.GE: ops.ge, Operator.LT: ops.lt, Operator.LE: ops.le, Operator.EQ: ops.eq,
    Operator.NE: ops.ne,
}
# Back past a recovery threshold: the negation of the operator's direction (``> 90`` recovers at ``<= 80``).
RECOVERED: dict[Operator, Callable[[float, float], bool]] = {
    Operator.GT: ops.le, Operator.GE: ops.lt, Operator.LT: ops.ge, Operator.LE: ops.gt,
}
SeriesKey = tuple[int, str]  # (server id, canonical labels)
# Operators a recovery threshold means something for; ``==`` and ``!=`` have no side to be on.
DIRECTIONAL = frozenset(RECOVERED)


class Reason(StrEnum):
    THRESHOLD = "threshold"  # the condition holds (pending, then firing)
    CLEARED = "cleared"  # a pending condition stopped holding
    RECOVERED = "recovered"  # a firing value went back past the recovery threshold
    NO_DATA = "no_data"  # no point in the window, and the policy moved it
    DATA_RETURNED = "data_returned"  # a silent server that fired under the no-data policy sends data again
    SUPPRESSED = "suppressed: server offline"  # fired while its server was down: attached to that outage
    OUT_OF_SCOPE = "out_of_scope"  # the rule no longer covers the server
    DISABLED = "disabled"  # the rule was disabled or deleted while firing


@dataclass(frozen=True)
class Condition:
    operator: Operator
    threshold: float
    recovery_threshold: float | None = None
    for_s: int = 0
    no_data: NoData = NoData.KEEP

    def holds(self, value: float) -> bool:
        return COMPARE[self.operator](value, self.threshold)

    def recovered(self, value: float) -> bool:
        if self.recovery_threshold is None or self.operator not in DIRECTIONAL:
            return not self.holds(value)
        return RECOVERED[self.operator](value, self.recovery_threshold)


@dataclass(frozen=True)
class State:
    status: AlertStatus = AlertStatus.OK
    since: datetime | None = None  # when it entered ``status``
    pending_since: datetime | None = None
    last_value: float | None = None


OK = State()


@dataclass(frozen=True)
class Change:
    at: datetime
    from_status: AlertStatus
    to_status: AlertStatus
    value: float | None
    reason: Reason


@dataclass(frozen=True)
class Step:
    state: State
    change: Change | None = None


def evaluate(condition: Condition, tracked: Mapping[SeriesKey, State], values: Mapping[SeriesKey, float],
             servers: Iterable[int], at: datetime) -> dict[SeriesKey, Step]:
    """One evaluation of a rule at ``at``: the step of every series worth one.

    ``tracked``: the series that are pending or firing; ``values``: the window's value of each series that had
    points; ``servers``: every server the rule covers. Looked at: every series with a value, every tracked series
    (without a value: no data), and each covered server that sent nothing and has nothing tracked, as its
    unlabelled series (no data), so that a silent server meets the no-data policy. A series that is ok and sent
    nothing while its server sent others is not looked at (it is not known to exist); a tracked unlabelled series
    that stood for a silent server resolves once the server sends other series (``data_returned``). Series that
    are ok and stay so are left out of the answer.
    """
    seen: dict[SeriesKey, float | None] = dict(values)
    for key in tracked:
        seen.setdefault(key, None)
    heard = {server_id for server_id, _ in seen}
    for server_id in servers:
        if server_id not in heard:
            seen[(server_id, "")] = None
    sending = {server_id for server_id, _ in values}
    steps: dict[SeriesKey, Step] = {}
    holds, silent_holds = condition.holds, condition.no_data is NoData.ALERT
    for key, value in seen.items():
        if key not in tracked and (not holds(value) if value is not None else not silent_holds):
            continue  # ok and staying ok: by far the most common series, decided without building a step
        state = tracked.get(key, OK)
        if value is None and key[1] == "" and key in tracked and key[0] in sending:
            moved = _to(state, AlertStatus.OK, at, None, Reason.DATA_RETURNED)
        else:
            moved = step(condition, state, value, at)
        if moved.change is not None or key in tracked:
            steps[key] = moved
    return steps


def step(condition: Condition, state: State, value: float | None, at: datetime) -> Step:
    """What observing ``value`` (None: no point in the window) at ``at`` does to ``state``."""
    if value is None:
        if condition.no_data is NoData.KEEP:
            return Step(state)
        if condition.no_data is NoData.OK:
            return _to(state, AlertStatus.OK, at, None, Reason.NO_DATA) if state.status is not AlertStatus.OK \
                else Step(state)
        return _holding(condition, state, None, at, Reason.NO_DATA)
    if condition.holds(value):
        return _holding(condition, state, value, at, Reason.THRESHOLD)
    if state.status is AlertStatus.PENDING:
        return _to(state, AlertStatus.OK, at, value, Reason.CLEARED)
    if state.status is AlertStatus.FIRING and condition.recovered(value):
        return _to(state, AlertStatus.OK, at, value, Reason.RECOVERED)
    return Step(replace(state, last_value=value))


def _holding(condition: Condition, state: State, value: float | None, at: datetime, reason: Reason) -> Step:
    if state.status is AlertStatus.FIRING:
        return Step(replace(state, last_value=value))
    pending_since = state.pending_since if state.status is AlertStatus.PENDING and state.pending_since else at
    if at - pending_since >= timedelta(seconds=condition.for_s):
        return _to(state, AlertStatus.FIRING, at, value, reason, pending_since=pending_since)
    if state.status is AlertStatus.PENDING:
        return Step(replace(state, last_value=value))
    return _to(state, AlertStatus.PENDING, at, value, reason, pending_since=at)


def _to(state: State, status: AlertStatus, at: datetime, value: float | None, reason: Reason, *,
        pending_since: datetime | None = None) -> Step:
    moved = State(status=status, since=at, pending_since=pending_since if status is not AlertStatus.OK else None,
                  last_value=value)
    return Step(moved, Change(at, state.status, status, value, reason))
