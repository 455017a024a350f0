"""The heartbeat status machine, as pure functions: no database, no clock (``at``/``now`` are passed in).

``new → up → late (past due, within grace) → down``, plus ``started`` (a run reported /start and has not
ended) and ``paused``. A ping moves it (``on_ping``); so does time (``on_deadline``, which the worker calls
once ``deadline_at`` has passed). Every status change is a ``Flip`` with its cause; a change into ``down``
from anything else raises the ``missed`` alert (once per outage), a change from ``down`` to ``up`` the
``recovered`` one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from hostatlas.heartbeats.models import HeartbeatStatus, PingKind
from hostatlas.heartbeats.schedule import Schedule

# Open runs remembered per heartbeat (?rid=): beyond this the oldest is forgotten, so a job that starts
# with a new rid every minute and never ends cannot grow a heartbeat without bound.
MAX_OPEN_RUNS = 64
# A success ping sooner than this fraction of the schedule's period after the last one is "too often".
TOO_OFTEN_FRACTION = 0.1

Alert = Literal["missed", "recovered"]


class Cause(StrEnum):
    PING = "ping"
    STARTED = "started"
    FAIL_PING = "fail_ping"
    EXIT_STATUS = "exit_status"
    RUN_TOO_SHORT = "run_too_short"
    RUN_TOO_LONG = "run_too_long"
    LATE = "late"
    MISSED = "missed"
    RUN_TIMEOUT = "run_timeout"
    PAUSED = "paused"
    RESUMED = "resumed"


@dataclass(frozen=True)
class Rules:
    """What the user configured."""

    schedule: Schedule
    grace: int
    min_runtime: int | None = None
    max_runtime: int | None = None
    manual_resume: bool = False


@dataclass(frozen=True)
class State:
    status: HeartbeatStatus = HeartbeatStatus.NEW
    last_ping_at: datetime | None = None
    last_start_at: datetime | None = None
    open_runs: dict[str, str] = field(default_factory=dict)  # rid -> ISO start
    last_duration_s: float | None = None
    next_due_at: datetime | None = None
    deadline_at: datetime | None = None


@dataclass(frozen=True)
class Flip:
    at: datetime
    from_status: HeartbeatStatus
    to_status: HeartbeatStatus
    cause: str


@dataclass(frozen=True)
class Transition:
    state: State
    flip: Flip | None = None
    alert: Alert | None = None
    duration_s: float | None = None  # the run this ping ended, if it ended one
    too_often: bool = False


def on_ping(rules: Rules, state: State, kind: PingKind, at: datetime, *, rid: str | None = None,
            exit_status: int | None = None) -> Transition:
    if kind is PingKind.LOG or _ignores_pings(rules, state):
        return Transition(state)
    if kind is PingKind.START:
        return _started(rules, state, at, rid)
    changes, duration = _end_run(state, at, rid)
    failed = kind is PingKind.FAIL or (exit_status is not None and exit_status != 0)
    cause = (Cause.EXIT_STATUS.value + f":{exit_status}" if failed and exit_status
             else Cause.FAIL_PING.value if failed else _runtime_problem(rules, duration))
    too_often = not failed and _too_often(rules, state, at)
    due = rules.schedule.next_due(at)
    changes.update(last_ping_at=at, last_duration_s=duration if duration is not None else state.last_duration_s,
                   next_due_at=due)
    if cause is not None:
        return _to(state, HeartbeatStatus.DOWN, cause, at, deadline_at=None, **changes, duration_s=duration,
                   too_often=too_often)
    return _to(state, HeartbeatStatus.UP, Cause.PING.value, at, deadline_at=due, **changes, duration_s=duration,
               too_often=too_often)


def on_deadline(rules: Rules, state: State, now: datetime) -> Transition:
    """What time alone does to the heartbeat by ``now`` (nothing before its ``deadline_at``)."""
    if state.deadline_at is None or now < state.deadline_at:
        return Transition(state)
    if state.status is HeartbeatStatus.STARTED:
        return _to(state, HeartbeatStatus.DOWN, Cause.RUN_TIMEOUT.value, now, deadline_at=None)
    if state.status in (HeartbeatStatus.UP, HeartbeatStatus.LATE) and state.next_due_at is not None:
        down_at = state.next_due_at + timedelta(seconds=rules.grace)
        if now < down_at:
            return _to(state, HeartbeatStatus.LATE, Cause.LATE.value, now, deadline_at=down_at)
        return _to(state, HeartbeatStatus.DOWN, Cause.MISSED.value, now, deadline_at=None)
    return Transition(replace(state, deadline_at=None))  # nothing time can change (a stale deadline)


def reschedule(rules: Rules, state: State) -> State:
    """The state under new rules (an edited schedule, grace or max_runtime), by the same arithmetic as the
    pings that made it: ``up`` or ``late`` is next due a period after its last ping and next looked at when
    due (up) or at due + grace (late); ``started`` when its run's allowance ends. Others wait for a ping."""
    if state.status in (HeartbeatStatus.UP, HeartbeatStatus.LATE) and state.last_ping_at is not None:
        due = rules.schedule.next_due(state.last_ping_at)
        deadline = due if state.status is HeartbeatStatus.UP else due + timedelta(seconds=rules.grace)
        return replace(state, next_due_at=due, deadline_at=deadline)
    if state.status is HeartbeatStatus.STARTED and state.last_start_at is not None:
        return replace(state, deadline_at=state.last_start_at + _allowance(rules))
    return state


def pause(state: State, now: datetime) -> Transition:
    return _to(state, HeartbeatStatus.PAUSED, Cause.PAUSED.value, now, open_runs={}, deadline_at=None)


def resume(state: State, now: datetime) -> Transition:
    """Back to ``new``: monitoring starts again with the next ping."""
    return _to(state, HeartbeatStatus.NEW, Cause.RESUMED.value, now, open_runs={}, last_start_at=None,
               next_due_at=None, deadline_at=None)


def _ignores_pings(rules: Rules, state: State) -> bool:
    # With manual_resume a heartbeat that is down (or paused) stays so until someone resumes it; its
    # pings are still recorded. Without it, any ping brings a paused heartbeat back into monitoring.
    return rules.manual_resume and state.status in (HeartbeatStatus.DOWN, HeartbeatStatus.PAUSED)


def _started(rules: Rules, state: State, at: datetime, rid: str | None) -> Transition:
    runs = dict(state.open_runs)
    if rid is not None:
        runs.pop(rid, None)
        runs[rid] = at.isoformat()
        while len(runs) > MAX_OPEN_RUNS:
            del runs[next(iter(runs))]
    return _to(state, HeartbeatStatus.STARTED, Cause.STARTED.value, at, last_start_at=at, open_runs=runs,
               deadline_at=at + _allowance(rules))


def _allowance(rules: Rules) -> timedelta:
    """How long a started run may take before the heartbeat is down: max_runtime, else the grace."""
    return timedelta(seconds=rules.max_runtime if rules.max_runtime is not None else rules.grace)


def _end_run(state: State, at: datetime, rid: str | None) -> tuple[dict[str, Any], float | None]:
    """The changes that close the run this ping ends, and that run's duration (None if no start is known)."""
    start: datetime | None
    changes: dict[str, Any]
    if rid is not None:
        runs = dict(state.open_runs)
        started = runs.pop(rid, None)
        start = datetime.fromisoformat(started) if started else None
        changes = {"open_runs": runs}
    else:
        start = state.last_start_at
        changes = {"last_start_at": None}
    if start is None or start > at:
        return changes, None
    return changes, (at - start).total_seconds()


def _runtime_problem(rules: Rules, duration: float | None) -> str | None:
    if duration is None:
        return None
    if rules.min_runtime is not None and duration < rules.min_runtime:
        return Cause.RUN_TOO_SHORT.value
    if rules.max_runtime is not None and duration > rules.max_runtime:
        return Cause.RUN_TOO_LONG.value
    return None


def _too_often(rules: Rules, state: State, at: datetime) -> bool:
    if state.last_ping_at is None or state.status in (HeartbeatStatus.NEW, HeartbeatStatus.PAUSED):
        return False
    gap = (at - state.last_ping_at).total_seconds()
    return gap < TOO_OFTEN_FRACTION * rules.schedule.typical_period(at)


def _to(state: State, status: HeartbeatStatus, cause: str, at: datetime, *, duration_s: float | None = None,
        too_often: bool = False, **changes: Any) -> Transition:
    """The transition to ``status`` with ``changes`` to the other fields: one copy of the state (a ping
    is the hot path; each ``replace`` copies every field)."""
    previous = state.status
    moved = replace(state, status=status, **changes)
    if status is previous:
        return Transition(moved, duration_s=duration_s, too_often=too_often)
    alert: Alert | None = None
    if status is HeartbeatStatus.DOWN and previous is not HeartbeatStatus.DOWN:
        alert = "missed"
    elif status is HeartbeatStatus.UP and previous is HeartbeatStatus.DOWN:
        alert = "recovered"
    return Transition(moved, Flip(at, previous, status, cause), alert, duration_s, too_often)
