"""The pure alert state machine: conditions, for, hysteresis, no data, and one evaluation of many series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hostatlas.alerts.machine import OK, Condition, Reason, State, evaluate, step
from hostatlas.alerts.models import AlertStatus, NoData, Operator

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _walk(condition: Condition, values: list[float | None]) -> list[tuple[AlertStatus, str | None]]:
    state, seen = OK, []
    for index, value in enumerate(values):
        moved = step(condition, state, value, T0 + timedelta(seconds=15 * index))
        state = moved.state
        seen.append((state.status, moved.change.reason.value if moved.change else None))
    return seen


@pytest.mark.parametrize(("operator", "firing", "calm"), [
    (Operator.GT, 91, 90), (Operator.GE, 90, 89.9), (Operator.LT, 89, 90), (Operator.LE, 90, 90.1),
    (Operator.EQ, 90, 91), (Operator.NE, 91, 90),
])
def test_each_operator_fires_on_its_side_of_the_threshold(operator: Operator, firing: float, calm: float) -> None:
    condition = Condition(operator, 90.0)
    assert _walk(condition, [calm, firing, calm]) == [(AlertStatus.OK, None), (AlertStatus.FIRING, "threshold"),
                                                      (AlertStatus.OK, "recovered")]


def test_for_keeps_it_pending_until_the_condition_has_held_that_long() -> None:
    condition = Condition(Operator.GE, 90.0, for_s=30)
    assert [status for status, _ in _walk(condition, [95, 95, 95, 95])] == [
        AlertStatus.PENDING, AlertStatus.PENDING, AlertStatus.FIRING, AlertStatus.FIRING]
    assert _walk(condition, [95, 80, 95])[1] == (AlertStatus.OK, "cleared")


def test_hysteresis_resolves_only_past_the_recovery_threshold() -> None:
    condition = Condition(Operator.GT, 90.0, recovery_threshold=80.0)
    assert [status for status, _ in _walk(condition, [95, 85, 80.1, 80, 85])] == [
        AlertStatus.FIRING, AlertStatus.FIRING, AlertStatus.FIRING, AlertStatus.OK, AlertStatus.OK]
    low = Condition(Operator.LT, 10.0, recovery_threshold=20.0)
    assert [status for status, _ in _walk(low, [5, 15, 19.9, 20])] == [
        AlertStatus.FIRING, AlertStatus.FIRING, AlertStatus.FIRING, AlertStatus.OK]


@pytest.mark.parametrize(("policy", "expected"), [
    (NoData.OK, [(AlertStatus.FIRING, "threshold"), (AlertStatus.OK, "no_data"), (AlertStatus.OK, None)]),
    (NoData.ALERT, [(AlertStatus.FIRING, "threshold"), (AlertStatus.FIRING, None), (AlertStatus.FIRING, None)]),
    (NoData.KEEP, [(AlertStatus.FIRING, "threshold"), (AlertStatus.FIRING, None), (AlertStatus.FIRING, None)]),
])
def test_no_data_follows_the_policy(policy: NoData, expected: list[tuple[AlertStatus, str | None]]) -> None:
    assert _walk(Condition(Operator.GE, 90.0, no_data=policy), [95, None, None]) == expected


def test_no_data_under_alert_counts_as_the_condition_holding_from_ok() -> None:
    condition = Condition(Operator.GE, 90.0, for_s=15, no_data=NoData.ALERT)
    assert _walk(condition, [None, None]) == [(AlertStatus.PENDING, "no_data"), (AlertStatus.FIRING, "no_data")]


def test_one_evaluation_looks_at_values_tracked_series_and_silent_servers() -> None:
    condition = Condition(Operator.GE, 90.0, no_data=NoData.ALERT)
    firing = State(AlertStatus.FIRING, since=T0, last_value=95)
    steps = evaluate(condition, {(1, "dev=a"): firing, (3, ""): firing}, {(1, "dev=b"): 50, (2, "dev=a"): 99,
                                                                          (3, "dev=a"): 10}, [1, 2, 3, 4], T0)
    assert {key: (moved.state.status, moved.change.reason if moved.change else None)
            for key, moved in steps.items()} == {
        (1, "dev=a"): (AlertStatus.FIRING, None),  # tracked, no value: no data holds
        (2, "dev=a"): (AlertStatus.FIRING, Reason.THRESHOLD),
        (3, ""): (AlertStatus.OK, Reason.DATA_RETURNED),  # stood for a silent server, which sends again
        (4, ""): (AlertStatus.FIRING, Reason.NO_DATA),  # a silent server
    }  # (1, "dev=b") and (3, "dev=a") are ok and stay so: left out
