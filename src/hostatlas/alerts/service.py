"""Alert rules: creation, lookup, editing, deletion, their states and history, which servers a rule covers, and
the rules a new team starts with.

Domain code, no HTTP. Every rule about what an alert rule may say lives in ``check`` (the request models only
check types and bounds at the edge), so a caller that is not the API cannot store a rule the worker cannot read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from hostatlas.alerts import state
from hostatlas.alerts.machine import DIRECTIONAL, Condition, Reason
from hostatlas.alerts.models import AlertRule, AlertState, AlertTransition, NoData, Operator, Scope
from hostatlas.alerts.schemas import MAX_SECONDS, MIN_WINDOW, AlertRuleOut
from hostatlas.errors import FieldProblem, InvalidInput, NotFound
from hostatlas.incidents.models import Severity
from hostatlas.servers.models import Server, ServerStatus, ServerTag
from hostatlas.servers.schemas import ServerRef
from hostatlas.telemetry.storage.contract import Agg
from hostatlas.telemetry.storage.series import LABEL_NAME, MAX_LABEL_VALUE, MAX_LABELS, METRIC_NAME

FIELDS = ("name", "description", "metric", "label_filters", "aggregation", "window_s", "operator", "threshold",
          "for_s", "recovery_threshold", "severity", "scope", "server_ids", "tags", "no_data", "enabled")
NULLABLE = frozenset({"recovery_threshold"})
DEFAULTS: dict[str, Any] = {"description": "", "label_filters": {}, "aggregation": Agg.AVG.value, "window_s": 300,
                            "for_s": 0, "recovery_threshold": None, "severity": Severity.WARNING.value,
                            "scope": Scope.ALL.value, "server_ids": [], "tags": [], "no_data": NoData.KEEP.value,
                            "enabled": True}

# What a new team starts with (issue 13): editable and deletable like any other rule.
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"name": "Disk almost full", "metric": "disk.used_percent", "operator": ">=", "threshold": 90.0, "for_s": 300,
     "severity": Severity.CRITICAL.value, "description": "Average disk use of 90% or more for 5 minutes"},
    {"name": "Memory almost exhausted", "metric": "mem.used_percent", "operator": ">=", "threshold": 95.0,
     "for_s": 600, "severity": Severity.WARNING.value,
     "description": "Average memory use of 95% or more for 10 minutes"},
    {"name": "CPU saturated", "metric": "cpu.percent", "operator": ">=", "threshold": 95.0, "for_s": 900,
     "severity": Severity.WARNING.value, "description": "Average CPU use of 95% or more for 15 minutes"},
)


@dataclass(frozen=True)
class Covered:
    """A server a rule covers, as evaluation needs it."""

    ref: ServerRef
    online: bool


def create_rule(session: Session, *, team_id: int, fields: Mapping[str, Any], now: datetime) -> AlertRule:
    """A new rule, evaluated from the worker's next tick. ``fields`` as in the API."""
    values = rule_values(fields)
    check(session, team_id, values)
    rule = AlertRule(team_id=team_id, created_at=now, updated_at=now, last_error=None)
    _assign(rule, values, now)
    session.add(rule)
    session.flush()
    return rule


def create_default_rules(session: Session, team_id: int, *, now: datetime) -> list[AlertRule]:
    """The rules a new team starts with (disk, memory, CPU; over every server, 5-minute averages). Called where
    teams are made (the CLI). Migration 0010 gave them to the teams that existed then without a server (a fresh
    install's default team); teams already watching servers got none, so an upgrade starts nothing firing."""
    return [create_rule(session, team_id=team_id, fields=fields, now=now) for fields in DEFAULT_RULES]


def get_rule(session: Session, *, team_id: int, rule_id: int) -> AlertRule:
    rule = session.scalar(select(AlertRule).where(AlertRule.id == rule_id, AlertRule.team_id == team_id))
    if rule is None:
        raise NotFound("Alert rule", "alert_rule_not_found")
    return rule


def listing(team_id: int, *, enabled: bool | None = None, severity: Severity | None = None,
            metric: str | None = None) -> Select[AlertRule]:
    stmt = select(AlertRule).where(AlertRule.team_id == team_id)
    if enabled is not None:
        stmt = stmt.where(AlertRule.enabled.is_(enabled))
    if severity is not None:
        stmt = stmt.where(AlertRule.severity == severity.value)
    if metric:
        stmt = stmt.where(AlertRule.metric == metric)
    return stmt


def update_rule(session: Session, *, team_id: int, rule_id: int, changes: Mapping[str, Any],
                now: datetime) -> AlertRule:
    """Apply the fields given (``None`` clears ``recovery_threshold``). Disabling resolves what fires; a new
    scope resolves the servers it leaves at the next evaluation."""
    rule = get_rule(session, team_id=team_id, rule_id=rule_id)
    changes = _known(changes)
    problems = [FieldProblem(name, "null_not_allowed", "Must not be null")
                for name, value in changes.items() if value is None and name not in NULLABLE]
    if problems:
        raise InvalidInput(problems)
    values = {name: getattr(rule, name) for name in FIELDS} | changes
    check(session, team_id, values)
    was_enabled = rule.enabled
    _assign(rule, values, now)
    if was_enabled and not rule.enabled:
        _resolve_states(session, rule, now)
    session.flush()
    return rule


def delete_rule(session: Session, *, team_id: int, rule_id: int, now: datetime) -> None:
    """Remove the rule with its states and history; what it fires is resolved first (incident and event)."""
    rule = get_rule(session, team_id=team_id, rule_id=rule_id)
    _resolve_states(session, rule, now)
    session.flush()
    session.delete(rule)


def state_listing(session: Session, *, team_id: int, rule_id: int) -> Select[AlertState]:
    rule = get_rule(session, team_id=team_id, rule_id=rule_id)
    return select(AlertState).where(AlertState.rule_id == rule.id, AlertState.team_id == team_id)


def history_listing(session: Session, *, team_id: int, rule_id: int) -> Select[AlertTransition]:
    rule = get_rule(session, team_id=team_id, rule_id=rule_id)
    return select(AlertTransition).where(AlertTransition.rule_id == rule.id, AlertTransition.team_id == team_id)


def hostnames(session: Session, team_id: int, server_ids: Sequence[int]) -> dict[int, str]:
    """Server id -> hostname, for rendering states and transitions (one query per page)."""
    if not server_ids:
        return {}
    rows = session.execute(select(Server.id, Server.hostname)
                           .where(Server.team_id == team_id, Server.id.in_(set(server_ids))))
    return {server_id: hostname for server_id, hostname in rows}


def covered_servers(session: Session, team_id: int, scope: Scope, server_ids: Sequence[int],
                    tags: Sequence[str]) -> dict[int, Covered]:
    """The team's servers a rule covers, by id: all of them, the ones listed, or those carrying any tag given."""
    stmt = select(Server.id, Server.hostname, Server.status).where(Server.team_id == team_id)
    if scope is Scope.SERVERS:
        stmt = stmt.where(Server.id.in_(list(server_ids)))
    elif scope is Scope.TAGS:
        stmt = stmt.where(Server.id.in_(select(ServerTag.server_id).where(ServerTag.team_id == team_id,
                                                                          ServerTag.tag.in_(list(tags)))))
    return {server_id: Covered(ServerRef(id=server_id, hostname=hostname), status == ServerStatus.ONLINE.value)
            for server_id, hostname, status in session.execute(stmt.order_by(Server.id))}


def rule_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A new rule's fields: the ones given (as in the API), the defaults for the others."""
    return {**DEFAULTS, **_known(fields)}


def condition_of(rule: AlertRuleOut) -> Condition:
    return Condition(operator=rule.operator, threshold=rule.threshold, recovery_threshold=rule.recovery_threshold,
                     for_s=rule.for_s, no_data=rule.no_data)


def check(session: Session, team_id: int, values: Mapping[str, Any]) -> None:
    """Every rule about a rule's fields at once, naming each field at fault (422)."""
    problems = [problem for problem in (_metric_problem(values["metric"]), _window_problem(values),
                                        _recovery_problem(values)) if problem is not None]
    problems += _label_problems(values["label_filters"])
    problems += _scope_problems(session, team_id, values)
    for name, kind in (("aggregation", Agg), ("operator", Operator), ("severity", Severity), ("scope", Scope),
                       ("no_data", NoData)):
        if values[name] not in {member.value for member in kind}:
            problems.append(FieldProblem(name, "invalid_choice", "Must be one of: " + ", ".join(kind)))
    if problems:
        raise InvalidInput(problems)


def _metric_problem(metric: object) -> FieldProblem | None:
    if isinstance(metric, str) and METRIC_NAME.match(metric):
        return None
    return FieldProblem("metric", "invalid_metric", "A metric name: lower-case letters, digits, '_' and '.', "
                                                    "starting with a letter, at most 128 characters")


def _window_problem(values: Mapping[str, Any]) -> FieldProblem | None:
    if not MIN_WINDOW <= values["window_s"] <= MAX_SECONDS:
        return FieldProblem("window_s", "out_of_range", f"Must be between {MIN_WINDOW} and {MAX_SECONDS} seconds")
    if not 0 <= values["for_s"] <= MAX_SECONDS:
        return FieldProblem("for_s", "out_of_range", f"Must be between 0 and {MAX_SECONDS} seconds")
    return None


def _recovery_problem(values: Mapping[str, Any]) -> FieldProblem | None:
    recovery = values["recovery_threshold"]
    if recovery is None:
        return None
    operator, threshold = values["operator"], values["threshold"]
    if operator not in {member.value for member in DIRECTIONAL}:
        return FieldProblem("recovery_threshold", "not_applicable",
                            "A recovery threshold needs a direction: use it with >, >=, < or <=")
    below = operator in (Operator.GT.value, Operator.GE.value)
    if (below and recovery > threshold) or (not below and recovery < threshold):
        side = "at or below" if below else "at or above"
        return FieldProblem("recovery_threshold", "wrong_side",
                            f"With {operator} the recovery threshold must be {side} the threshold ({threshold:g})")
    return None


def _label_problems(filters: Mapping[str, Any]) -> list[FieldProblem]:
    if not isinstance(filters, Mapping) or len(filters) > MAX_LABELS:
        return [FieldProblem("label_filters", "too_many_labels", f"At most {MAX_LABELS} labels")]
    for name, value in filters.items():
        if not LABEL_NAME.match(name) or not isinstance(value, str) or len(value) > MAX_LABEL_VALUE \
                or "," in value or "=" in value:
            return [FieldProblem(f"label_filters.{name}", "invalid_label",
                                 f"Label names as metrics have them; values at most {MAX_LABEL_VALUE} characters "
                                 "without ',' or '='")]
    return []


def _scope_problems(session: Session, team_id: int, values: Mapping[str, Any]) -> list[FieldProblem]:
    scope, server_ids, tags = values["scope"], list(values["server_ids"]), list(values["tags"])
    problems = []
    if scope == Scope.SERVERS.value:
        if not server_ids:
            problems.append(FieldProblem("server_ids", "required", "List at least one server for scope servers"))
        known = set(session.scalars(select(Server.id).where(Server.team_id == team_id,
                                                            Server.id.in_(server_ids)))) if server_ids else set()
        unknown = sorted(set(server_ids) - known)
        if unknown:
            problems.append(FieldProblem("server_ids", "unknown_server",
                                         "No such server in this team: " + ", ".join(map(str, unknown[:20]))))
    elif server_ids:
        problems.append(FieldProblem("server_ids", "not_applicable", "Only with scope servers"))
    if scope == Scope.TAGS.value and not tags:
        problems.append(FieldProblem("tags", "required", "List at least one tag for scope tags"))
    elif scope != Scope.TAGS.value and tags:
        problems.append(FieldProblem("tags", "not_applicable", "Only with scope tags"))
    return problems


def _known(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _plain(fields[name]) for name in FIELDS if name in fields}


def _plain(value: Any) -> Any:
    """Enum members as their values: the columns hold strings."""
    return value.value if hasattr(value, "value") else value


def _assign(rule: AlertRule, values: Mapping[str, Any], now: datetime) -> None:
    for name in FIELDS:
        value = values[name]
        if name in ("server_ids", "tags"):
            value = sorted(set(value))
        elif name == "label_filters":
            value = dict(value)
        elif name == "threshold" or (name == "recovery_threshold" and value is not None):
            value = float(value)
        setattr(rule, name, value)
    # Due at once when enabled (the worker evaluates it at its next tick, on the interval's grid); never while
    # disabled. An edit makes it due again so the new condition is looked at without waiting an interval.
    rule.next_evaluation_at = now if rule.enabled else None
    rule.updated_at = now


def _resolve_states(session: Session, rule: AlertRule, now: datetime) -> None:
    rows = list(session.scalars(select(AlertState).where(AlertState.rule_id == rule.id).order_by(AlertState.id)))
    if not rows:
        return
    names = hostnames(session, rule.team_id, [row.server_id for row in rows])
    out = AlertRuleOut.of(rule)
    pairs = [(state.Series(rule.team_id, out, ServerRef(id=row.server_id, hostname=names.get(row.server_id, "")),
                           row.labels), row) for row in rows]
    state.resolve_all(session, pairs, Reason.DISABLED, now)
