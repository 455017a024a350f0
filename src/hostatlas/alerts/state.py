"""Between the stored alert states and the pure machine: read a series' state, store a step.

``apply`` is the one place a step is stored: the state row, the transition, the incident (opened, followed up,
reopened or recovered through ``hostatlas.incidents``) and the alert event go into the caller's session together,
so a transition exists exactly when its change committed, and ``alert.triggered`` / ``alert.resolved`` reach
webhooks through the event outbox like every other event.

A series that fires while its server is offline is attached to the server's outage incident by the incidents
service (``Outcome.suppressed``): its transition says so, and neither its firing nor its resolution sends an alert
event. If it is still firing once its server is back online, it fires again as itself (``resume``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session

from hostatlas.alerts.machine import Change, Reason, State, Step
from hostatlas.alerts.models import AlertState, AlertStatus, AlertTransition
from hostatlas.alerts.schemas import AlertEventData, AlertRuleOut
from hostatlas.events import service as events
from hostatlas.incidents import service as incidents
from hostatlas.incidents.models import SOURCE_KEY_MAX, TITLE_MAX, Severity, Source
from hostatlas.servers.schemas import ServerRef
from hostatlas.telemetry.storage.series import label_pairs

RESUMED = "resumed: server online"
# The event each announced state sends.
ALERT_EVENTS = {"firing": events.ALERT_TRIGGERED, "ok": events.ALERT_RESOLVED}


@dataclass(frozen=True)
class Series:
    """One watched series of one rule: the rule (as its API shows it), the team, the server and the labels."""

    team_id: int
    rule: AlertRuleOut
    server: ServerRef
    labels: str

    @property
    def key(self) -> str:
        """The incident key: the same series always reports under the same key (a flap reopens its incident)."""
        key = f"rule:{self.rule.id}:server:{self.server.id}:{self.labels}"
        if len(key) > SOURCE_KEY_MAX:
            digest = hashlib.sha256(self.labels.encode()).hexdigest()[:32]
            key = f"rule:{self.rule.id}:server:{self.server.id}:sha256:{digest}"
        return key


def state_of(row: AlertState | None) -> State:
    if row is None:
        return State()
    return State(status=AlertStatus(row.state), since=row.since, pending_since=row.pending_since,
                 last_value=row.last_value)


def apply(session: Session, series: Series, row: AlertState | None, step: Step, at: datetime) -> AlertState | None:
    """Store ``step`` of ``series`` (whose state row is ``row``, None while ok); returns its row afterwards."""
    change = step.change
    if change is None:
        if row is not None:
            row.last_value = step.state.last_value
            row.last_evaluated_at = at
        return row
    if change.to_status is AlertStatus.FIRING:
        return _fire(session, series, row, step, change, at)
    if change.to_status is AlertStatus.PENDING:
        row = _stored(session, series, row, step.state, at)
        _transition(session, series, change, change.reason.value, None)
        return row
    _resolve(session, series, row, change, at)
    return None


def resume(session: Session, series: Series, row: AlertState, at: datetime) -> None:
    """A series that fired while its server was offline and still fires now that the server is back: it fires
    as itself (its own incident and ``alert.triggered``)."""
    change = Change(at, AlertStatus.FIRING, AlertStatus.FIRING, row.last_value, Reason.THRESHOLD)
    outcome = incidents.report(session, _problem(series, row.last_value), at=at)
    if outcome.suppressed:
        return  # the server is down again: still part of its outage
    row.suppressed = False
    row.incident_id = outcome.incident.id
    _transition(session, series, change, RESUMED, row.incident_id)
    _announce(session, series, row.last_value, "firing", row.incident_id, at)


def resolve_all(session: Session, series_rows: list[tuple[Series, AlertState]], reason: Reason, at: datetime) -> None:
    """Resolve firing series whatever their values (the rule was disabled, deleted or narrowed); pending ones just
    go. Their rows are removed."""
    for series, row in series_rows:
        change = Change(at, AlertStatus(row.state), AlertStatus.OK, None, reason)
        _resolve(session, series, row, change, at)


def _fire(session: Session, series: Series, row: AlertState | None, step: Step, change: Change,
          at: datetime) -> AlertState:
    outcome = incidents.report(session, _problem(series, change.value), at=at)
    row = _stored(session, series, row, step.state, at)
    row.incident_id = outcome.incident.id
    row.suppressed = outcome.suppressed
    reason = Reason.SUPPRESSED.value if outcome.suppressed else change.reason.value
    _transition(session, series, change, reason, row.incident_id)
    if not outcome.suppressed:
        _announce(session, series, change.value, "firing", row.incident_id, at)
    return row


def _resolve(session: Session, series: Series, row: AlertState | None, change: Change, at: datetime) -> None:
    incident_id = row.incident_id if row is not None else None
    if change.from_status is AlertStatus.FIRING:
        incidents.recover(session, team_id=series.team_id, source=Source.ALERT, key=series.key, at=at,
                          data=_data(series, change.value), message=_message(series, change.value, resolved=True))
        if row is None or not row.suppressed:
            _announce(session, series, change.value, "ok", incident_id, at)
    _transition(session, series, change, change.reason.value, incident_id)
    if row is not None:
        session.delete(row)


def _stored(session: Session, series: Series, row: AlertState | None, state: State, at: datetime) -> AlertState:
    assert state.since is not None
    if row is None:
        row = AlertState(rule_id=series.rule.id, team_id=series.team_id, server_id=series.server.id,
                         labels=series.labels, suppressed=False)
        session.add(row)
    row.state = state.status.value
    row.since = state.since
    row.pending_since = state.pending_since
    row.last_value = state.last_value
    row.last_evaluated_at = at
    return row


def _transition(session: Session, series: Series, change: Change, reason: str, incident_id: int | None) -> None:
    session.add(AlertTransition(rule_id=series.rule.id, team_id=series.team_id, server_id=series.server.id,
                                labels=series.labels, at=change.at, from_state=change.from_status.value,
                                to_state=change.to_status.value, value=change.value, threshold=series.rule.threshold,
                                reason=reason, incident_id=incident_id))


def _announce(session: Session, series: Series, value: float | None, state: Literal["firing", "ok"],
              incident_id: int | None, at: datetime) -> None:
    rule = series.rule
    data = AlertEventData(rule=rule, server=series.server, labels=label_pairs(series.labels), value=value,
                          threshold=rule.threshold, recovery_threshold=rule.recovery_threshold, state=state,
                          incident_id=incident_id, at=at)
    events.record(session, team_id=series.team_id, type=ALERT_EVENTS[state], resource_type="alert_rule",
                  resource_id=rule.id, payload=data.model_dump(mode="json"), at=at, server_id=series.server.id)


def _problem(series: Series, value: float | None) -> incidents.Problem:
    rule = series.rule
    where = f" ({series.labels})" if series.labels else ""
    title = f"{rule.name} on {series.server.hostname}{where}"
    return incidents.Problem(team_id=series.team_id, source=Source.ALERT, key=series.key,
                             title=title[:TITLE_MAX], severity=Severity(rule.severity), server_id=series.server.id,
                             service=None, data=_data(series, value), message=_message(series, value))


def _data(series: Series, value: float | None) -> dict[str, object]:
    rule = series.rule
    return {"rule_id": rule.id, "metric": rule.metric, "labels": label_pairs(series.labels), "value": value,
            "threshold": rule.threshold, "recovery_threshold": rule.recovery_threshold}


def _message(series: Series, value: float | None, *, resolved: bool = False) -> str:
    rule = series.rule
    observed = "no data" if value is None else f"{value:g}"
    condition = f"{rule.aggregation.value}({rule.metric}) over {rule.window_s} s"
    if resolved:
        return f"Resolved: {condition} is {observed}"
    return f"{condition} is {observed} ({rule.operator.value} {rule.threshold:g})"
