"""The worker job that evaluates alert rules: every ``HOSTATLAS_ALERT_INTERVAL`` seconds, each enabled rule once.

Time is a grid: an evaluation at ``now`` is the evaluation of ``t = now`` floored to the interval, over the
window ``[t - window_s, t)``, so what live evaluation sees at t is what a backtest replays at t (both on
either telemetry backend). Per rule and tick:

1. the lease: a conditional ``UPDATE ... SET next_evaluation_at = t + interval WHERE next_evaluation_at <= now``
   claims the rule, committed at once; a worker whose UPDATE matched nothing leaves the rule alone, so two
   workers never evaluate one rule for the same instant (and never send an event twice);
2. one ``aggregate_window`` query to the telemetry store across every server the rule covers (never one per
   server), outside any database transaction, answering only the series worth a look (``_worth_a_look``: those
   meeting the condition and those of servers already pending or firing), filtered by the store;
3. every series observed, and every server covered that sent nothing (the rule's no-data policy), goes through
   ``machine.step``; the steps that change something are stored by ``state.apply`` in one transaction.

One rule that cannot be evaluated (bad stored data, a query its store refuses) must not keep the others from
firing: each rule is evaluated on its own, its error kept on the rule (``last_error``, shown by the API) and
logged, and it is tried again at its next interval. The job raises, for the worker's health registry, when the
database is down or when every rule failed (then the fault is the store's, not the rules').
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hostatlas.alerts import machine, service, state
from hostatlas.alerts.machine import Reason
from hostatlas.alerts.models import AlertRule, AlertState, AlertStatus, NoData, Scope
from hostatlas.alerts.schemas import AlertRuleOut
from hostatlas.db.engine import Database
from hostatlas.pipelines.isolation import is_outage
from hostatlas.pipelines.quarantine import describe
from hostatlas.servers.schemas import ServerRef
from hostatlas.settings import Settings
from hostatlas.telemetry.storage.contract import TelemetryStore, WindowFilter, WindowQuery
from hostatlas.telemetry.storage.stores import open_store

log = structlog.get_logger(__name__)

# Rules looked at per tick; more due than this (a worker that was stopped) are the next ticks'.
RULES_PER_TICK = 1000
ERROR_MAX = 500

SeriesKey = tuple[int, str]


def tick_of(now: datetime, interval: int) -> datetime:
    """``now`` floored to the evaluation grid (multiples of ``interval`` seconds since the epoch)."""
    seconds = int(now.timestamp())
    return datetime.fromtimestamp(seconds - seconds % interval, UTC)


class RuleEvaluation:
    """The worker job (``hostatlas.jobs``): the telemetry store is opened at its first tick and kept, as the
    worker that runs it lives; ``store`` is given by tests and the benchmark."""

    def __init__(self, store: TelemetryStore | None = None) -> None:
        self._store = store

    def __call__(self, db: Database, settings: Settings, now: datetime) -> int:
        if self._store is None:
            self._store = open_store(settings)
        return evaluate_rules(db, settings, now, store=self._store)


@dataclass
class Pass:
    """One tick's evaluation: the servers each scope covers are read once per pass, whatever the rules."""

    db: Database
    store: TelemetryStore
    now: datetime
    tick: datetime
    interval: int
    covered: dict[tuple[int, str, tuple[int, ...], tuple[str, ...]], dict[int, service.Covered]] = \
        field(default_factory=dict)


def evaluate_rules(db: Database, settings: Settings, now: datetime, *, store: TelemetryStore,
                   on_query: Callable[[int, float], None] | None = None) -> int:
    """Evaluate every due rule once; returns the transitions stored. ``on_query(rule_id, seconds)``: told how long
    each rule's store query took (the benchmark)."""
    with db.session(write=False) as session:  # most ticks find nothing due and take no write lock
        due = list(session.scalars(select(AlertRule.id).where(AlertRule.next_evaluation_at <= now)
                                   .order_by(AlertRule.next_evaluation_at, AlertRule.id).limit(RULES_PER_TICK)))
    evaluation = Pass(db, store, now, tick_of(now, settings.alert_interval), settings.alert_interval)
    made, failures = 0, []
    for rule_id in due:
        try:
            made += _evaluate(evaluation, rule_id, on_query)
        except Exception as exc:
            if is_outage(exc):
                raise
            log.exception("alert_rule_failed", rule_id=rule_id)
            failures.append(exc)
            _keep_error(db, rule_id, describe(exc))
    if len(failures) > 1 and len(failures) == len(due):
        raise failures[0]  # every rule failed: the store is down, not the rules
    return made


def _evaluate(evaluation: Pass, rule_id: int, on_query: Callable[[int, float], None] | None) -> int:
    claimed = _claim(evaluation, rule_id)
    if claimed is None:
        return 0  # another worker has it for this interval, or it was disabled meanwhile
    team_id, rule, covered, tracked = claimed
    tick = int(evaluation.tick.timestamp())
    values: dict[SeriesKey, float] = {}
    if covered:
        scope_ids = None if rule.scope is Scope.ALL else sorted(covered)
        started = time.monotonic()
        found = evaluation.store.aggregate_window(WindowQuery(team_id, scope_ids, rule.metric, rule.label_filters,
                                                              tick - rule.window_s, tick, rule.aggregation,
                                                              only=_worth_a_look(rule, tracked)))
        if on_query is not None:
            on_query(rule_id, time.monotonic() - started)
        values = {(server_id, labels): value for server_id, labels, value in found if server_id in covered}
    with evaluation.db.session(write=True) as session:
        return _store_steps(session, team_id, rule, covered, values, evaluation.tick)


# Past this many servers with pending or firing series, a rule asks for every series (a filter naming them all
# would cost more than it saves).
KEEP_MAX = 500


def _worth_a_look(rule: AlertRuleOut, tracked: set[int]) -> WindowFilter | None:
    """What of the window the machine needs: the series meeting the condition, and every series of the servers
    the rule already tracks (to see them recover). A series that is ok and stays ok is decided without being
    read, which is nearly every series of a healthy fleet, so a tick costs the process that evaluates it (the
    serving one, on a single box) almost nothing. The `alert` no-data policy must see which servers sent
    anything, and so reads every series."""
    if rule.no_data is NoData.ALERT or len(tracked) > KEEP_MAX:
        return None
    return WindowFilter(rule.operator.value, rule.threshold, keep=sorted(tracked))


def _claim(evaluation: Pass, rule_id: int) -> tuple[int, AlertRuleOut, dict[int, service.Covered], set[int]] | None:
    """Take the rule's lease for this interval; the rule, the servers it covers and those it tracks (pending or
    firing) if this worker got it.

    The lease commits on its own, before the rule is even read: a rule that cannot be read or evaluated waits
    for its next interval like any other, instead of being tried again at every tick of every worker."""
    next_at = evaluation.tick + timedelta(seconds=evaluation.interval)
    with evaluation.db.session(write=True) as session:
        claimed = session.execute(update(AlertRule).where(AlertRule.id == rule_id, AlertRule.enabled.is_(True),
                                                          AlertRule.next_evaluation_at <= evaluation.now)
                                  .values(next_evaluation_at=next_at).returning(AlertRule.id)).first()
    if claimed is None:
        return None
    with evaluation.db.session(write=False) as session:
        stored = session.get_one(AlertRule, rule_id)
        rule = AlertRuleOut.of(stored)
        team_id = stored.team_id
        key = (team_id, rule.scope.value, tuple(rule.server_ids), tuple(rule.tags))
        if key not in evaluation.covered:
            evaluation.covered[key] = service.covered_servers(session, team_id, rule.scope, rule.server_ids,
                                                              rule.tags)
        # The lease is ours for this interval: nothing else changes the rule's states until we store ours (an
        # edit of the rule resolves them and makes it due again, for the next lease).
        tracked = set(session.scalars(select(AlertState.server_id).where(AlertState.rule_id == rule_id)))
    return team_id, rule, evaluation.covered[key], tracked


def _store_steps(session: Session, team_id: int, rule: AlertRuleOut, covered: dict[int, service.Covered],
                 values: dict[SeriesKey, float], tick: datetime) -> int:
    rows = {(row.server_id, row.labels): row for row in session.scalars(
        select(AlertState).where(AlertState.rule_id == rule.id).order_by(AlertState.id))}
    condition = service.condition_of(rule)
    made = 0
    left = [key for key in rows if key[0] not in covered]
    if left:
        names = service.hostnames(session, team_id, [server_id for server_id, _ in left])
        state.resolve_all(session, [(_series(team_id, rule, server_id, names.get(server_id, ""), labels),
                                     rows.pop((server_id, labels))) for server_id, labels in left],
                          Reason.OUT_OF_SCOPE, tick)
        made += len(left)
    tracked = {key: state.state_of(row) for key, row in rows.items()}
    unchanged: list[dict[str, object]] = []
    # Only the `alert` no-data policy needs every covered server (a silent one holds the condition).
    silent_matter = covered if condition.no_data is NoData.ALERT else ()
    for key, step in machine.evaluate(condition, tracked, values, silent_matter, tick).items():
        row = rows.get(key)
        server = covered[key[0]]
        if step.change is None and row is not None and not (row.suppressed and server.online):
            unchanged.append({"id": row.id, "last_value": step.state.last_value, "last_evaluated_at": tick})
            continue
        series = _series(team_id, rule, server.ref.id, server.ref.hostname, key[1])
        if step.change is None and row is not None and row.state == AlertStatus.FIRING.value:
            state.resume(session, series, row, tick)
        state.apply(session, series, row, step, tick)
        made += step.change is not None
    if unchanged:
        # Pending and firing series that stay so: one executemany, not an UPDATE per object (thousands may fire).
        session.execute(update(AlertState), unchanged)
    session.execute(update(AlertRule).where(AlertRule.id == rule.id, AlertRule.last_error.is_not(None))
                    .values(last_error=None))
    return made


def _series(team_id: int, rule: AlertRuleOut, server_id: int, hostname: str, labels: str) -> state.Series:
    return state.Series(team_id, rule, ServerRef(id=server_id, hostname=hostname), labels)


def _keep_error(db: Database, rule_id: int, error: str) -> None:
    try:
        with db.session(write=True) as session:
            session.execute(update(AlertRule).where(AlertRule.id == rule_id).values(last_error=error[:ERROR_MAX]))
    except Exception:
        log.exception("alert_rule_error_not_kept", rule_id=rule_id)


