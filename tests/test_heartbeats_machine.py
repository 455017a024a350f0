"""The heartbeat status machine and schedules, as pure functions: no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hostatlas.heartbeats import machine
from hostatlas.heartbeats.machine import Cause, Rules, State
from hostatlas.heartbeats.models import HeartbeatStatus as S
from hostatlas.heartbeats.models import PingKind
from hostatlas.heartbeats.schedule import Schedule, cron_problem, timezone_problem

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
HOURLY = Rules(schedule=Schedule(interval=3600), grace=300)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ping(rules: Rules, state: State, seconds: float, kind: PingKind = PingKind.SUCCESS, **kw: object
         ) -> machine.Transition:
    return machine.on_ping(rules, state, kind, at(seconds), **kw)  # type: ignore[arg-type]


def test_first_ping_brings_a_new_heartbeat_up_and_sets_the_deadline() -> None:
    moved = ping(HOURLY, State(), 0)
    assert moved.state.status is S.UP
    assert moved.state.next_due_at == at(3600) == moved.state.deadline_at
    assert moved.flip is not None and (moved.flip.from_status, moved.flip.to_status) == (S.NEW, S.UP)
    assert moved.alert is None


def test_time_alone_goes_up_late_down_at_due_and_due_plus_grace() -> None:
    up = ping(HOURLY, State(), 0).state
    assert machine.on_deadline(HOURLY, up, at(3599)).state.status is S.UP
    late = machine.on_deadline(HOURLY, up, at(3600))
    assert late.state.status is S.LATE and late.state.deadline_at == at(3900) and late.alert is None
    assert machine.on_deadline(HOURLY, late.state, at(3899)).state.status is S.LATE
    down = machine.on_deadline(HOURLY, late.state, at(3900))
    assert down.state.status is S.DOWN and down.alert == "missed" and down.flip is not None
    assert down.flip.cause == Cause.MISSED and down.state.deadline_at is None


def test_a_slow_worker_goes_straight_to_down_once() -> None:
    up = ping(HOURLY, State(), 0).state
    down = machine.on_deadline(HOURLY, up, at(10_000))
    assert down.state.status is S.DOWN and down.alert == "missed"
    again = machine.on_deadline(HOURLY, down.state, at(20_000))
    assert again.flip is None and again.alert is None


def test_recovery_after_an_outage_is_announced() -> None:
    down = machine.on_deadline(HOURLY, ping(HOURLY, State(), 0).state, at(10_000)).state
    back = ping(HOURLY, down, 10_001)
    assert back.state.status is S.UP and back.alert == "recovered"


def test_fail_and_exit_status_pings_go_down_with_their_cause_once_per_outage() -> None:
    up = ping(HOURLY, State(), 0).state
    failed = ping(HOURLY, up, 60, PingKind.FAIL)
    assert failed.state.status is S.DOWN and failed.alert == "missed" and failed.flip is not None
    assert failed.flip.cause == Cause.FAIL_PING
    second = ping(HOURLY, failed.state, 120, PingKind.SUCCESS, exit_status=3)
    assert second.state.status is S.DOWN and second.alert is None  # the same outage
    exited = ping(HOURLY, up, 60, PingKind.SUCCESS, exit_status=2)
    assert exited.flip is not None and exited.flip.cause == "exit_status:2"
    assert ping(HOURLY, up, 60, PingKind.SUCCESS, exit_status=0).state.status is S.UP


def test_start_then_silence_goes_down_after_max_runtime_or_grace() -> None:
    rules = Rules(schedule=Schedule(interval=3600), grace=300, max_runtime=900)
    started = ping(rules, ping(rules, State(), 0).state, 100, PingKind.START)
    assert started.state.status is S.STARTED and started.state.deadline_at == at(1000)
    assert machine.on_deadline(rules, started.state, at(999)).state.status is S.STARTED
    timed_out = machine.on_deadline(rules, started.state, at(1000))
    assert timed_out.state.status is S.DOWN and timed_out.alert == "missed"
    assert timed_out.flip is not None and timed_out.flip.cause == Cause.RUN_TIMEOUT
    no_max = ping(HOURLY, State(), 100, PingKind.START)
    assert no_max.state.deadline_at == at(400)


def test_run_shorter_than_min_or_longer_than_max_runtime_fails() -> None:
    rules = Rules(schedule=Schedule(interval=3600), grace=300, min_runtime=60, max_runtime=600)
    started = ping(rules, State(), 0, PingKind.START).state
    short = ping(rules, started, 30)
    assert short.state.status is S.DOWN and short.duration_s == 30 and short.flip is not None
    assert short.flip.cause == Cause.RUN_TOO_SHORT
    long = ping(rules, started, 700)
    assert long.flip is not None and long.flip.cause == Cause.RUN_TOO_LONG
    fine = ping(rules, started, 120)
    assert fine.state.status is S.UP and fine.duration_s == 120 and fine.state.last_duration_s == 120


def test_overlapping_runs_are_timed_by_their_rid() -> None:
    state = ping(HOURLY, State(), 0, PingKind.START, rid="a").state
    state = ping(HOURLY, state, 10, PingKind.START, rid="b").state
    ended_a = ping(HOURLY, state, 100, rid="a")
    assert ended_a.duration_s == 100 and "a" not in ended_a.state.open_runs and "b" in ended_a.state.open_runs
    ended_b = ping(HOURLY, ended_a.state, 130, rid="b")
    assert ended_b.duration_s == 120
    unknown = ping(HOURLY, ended_b.state, 140, rid="never-started")
    assert unknown.duration_s is None and unknown.state.status is S.UP


def test_open_runs_are_bounded() -> None:
    state = State()
    for number in range(machine.MAX_OPEN_RUNS + 10):
        state = ping(HOURLY, state, number, PingKind.START, rid=f"r{number}").state
    assert len(state.open_runs) == machine.MAX_OPEN_RUNS and "r0" not in state.open_runs


def test_manual_resume_stays_down_until_resumed() -> None:
    rules = Rules(schedule=Schedule(interval=3600), grace=300, manual_resume=True)
    down = ping(rules, ping(rules, State(), 0).state, 10, PingKind.FAIL).state
    still = ping(rules, down, 20)
    assert still.state.status is S.DOWN and still.flip is None
    resumed = machine.resume(down, at(30))
    assert resumed.state.status is S.NEW and resumed.flip is not None and resumed.flip.cause == Cause.RESUMED
    assert ping(rules, resumed.state, 40).state.status is S.UP


def test_paused_never_alerts_and_a_ping_resumes_unless_manual() -> None:
    paused = machine.pause(ping(HOURLY, State(), 0).state, at(10))
    assert paused.state.status is S.PAUSED and paused.state.deadline_at is None and paused.alert is None
    assert machine.on_deadline(HOURLY, paused.state, at(100_000)).state.status is S.PAUSED
    assert ping(HOURLY, paused.state, 50).state.status is S.UP
    manual = Rules(schedule=Schedule(interval=3600), grace=300, manual_resume=True)
    assert ping(manual, paused.state, 50).state.status is S.PAUSED


def test_log_pings_change_nothing() -> None:
    up = ping(HOURLY, State(), 0).state
    assert ping(HOURLY, up, 10, PingKind.LOG).state == up


def test_pings_far_more_often_than_the_schedule_are_flagged() -> None:
    up = ping(HOURLY, State(), 0).state
    assert ping(HOURLY, up, 60).too_often
    assert not ping(HOURLY, up, 3500).too_often
    assert not ping(HOURLY, State(), 0).too_often


BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(("after", "expected"), [
    # Spring forward (2026-03-29, 02:00 -> 03:00): 02:30 does not exist that night; the job is due at 03:00.
    (datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN), datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)),
    (datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN), datetime(2026, 3, 30, 2, 30, tzinfo=BERLIN)),
    # Fall back (2026-10-25, 03:00 -> 02:00): 02:30 happens twice; the job is due once, at the first.
    (datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN), datetime(2026, 10, 25, 2, 30, fold=0, tzinfo=BERLIN)),
])
def test_cron_is_read_in_the_heartbeats_timezone_across_dst(after: datetime, expected: datetime) -> None:
    due = Schedule(cron="30 2 * * *", timezone="Europe/Berlin").next_due(after.astimezone(UTC))
    assert due == expected.astimezone(UTC)


def test_after_the_repeated_hour_the_next_run_is_the_next_day() -> None:
    schedule = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    first = schedule.next_due(datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN).astimezone(UTC))
    assert schedule.next_due(first) == datetime(2026, 10, 26, 2, 30, tzinfo=BERLIN).astimezone(UTC)


def test_cron_heartbeat_goes_late_and_down_at_the_local_instants() -> None:
    rules = Rules(schedule=Schedule(cron="0 9 * * 1-5", timezone="America/New_York"), grace=600)
    friday = datetime(2026, 11, 27, 9, 0, 5, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
    up = machine.on_ping(rules, State(), PingKind.SUCCESS, friday).state
    monday_9 = datetime(2026, 11, 30, 9, 0, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
    assert up.next_due_at == monday_9
    assert machine.on_deadline(rules, up, monday_9 - timedelta(seconds=1)).state.status is S.UP
    late = machine.on_deadline(rules, up, monday_9)
    assert late.state.status is S.LATE
    assert machine.on_deadline(rules, late.state, monday_9 + timedelta(seconds=600)).state.status is S.DOWN


def test_bad_cron_and_timezones_are_explained() -> None:
    assert cron_problem("*/5 * * * *") is None
    assert cron_problem("61 * * * *")
    assert cron_problem("not cron")
    assert cron_problem("* " * 60)
    assert timezone_problem("Europe/Berlin") is None and timezone_problem("UTC") is None
    assert timezone_problem("Mars/Olympus")
    assert timezone_problem("../../etc/passwd")


def test_reschedule_applies_new_rules_with_the_pings_arithmetic() -> None:
    up = ping(HOURLY, State(), 0).state
    daily = Rules(schedule=Schedule(interval=86400), grace=600, max_runtime=120)
    moved = machine.reschedule(daily, up)
    assert moved.next_due_at == at(86400) == moved.deadline_at and moved.status is S.UP
    late = machine.on_deadline(HOURLY, up, at(3600)).state
    assert machine.reschedule(daily, late).deadline_at == at(86400 + 600)
    started = ping(HOURLY, up, 10, PingKind.START).state
    assert machine.reschedule(daily, started).deadline_at == at(130)
    assert machine.reschedule(daily, State()) == State()
