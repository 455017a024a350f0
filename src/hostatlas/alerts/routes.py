"""``/api/v1/alert-rules``: thin handlers over ``alerts.service`` and ``alerts.backtest``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Security
from sqlalchemy.orm import Session

from hostatlas.alerts import backtest, service
from hostatlas.alerts.models import AlertRule, AlertState, AlertStatus, AlertTransition
from hostatlas.alerts.schemas import (
    AlertRuleCreate,
    AlertRuleOut,
    AlertRuleUpdate,
    AlertStateOut,
    BacktestAnswer,
    BacktestRequest,
    MetricName,
    TransitionOut,
)
from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.clock import utcnow
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import ListParams, Page, PageResult, list_params, page_of, paginate
from hostatlas.http.runtime import AppRuntime
from hostatlas.http.types import IdPath
from hostatlas.incidents.models import Severity
from hostatlas.servers.schemas import ServerRef
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.storage.series import label_pairs

router = APIRouter(prefix="/api/v1/alert-rules", tags=["Alert rules"])

Reader = Annotated[Principal, Security(authenticated, scopes=["alert_rules:read"])]
Writer = Annotated[Principal, Security(authenticated, scopes=["alert_rules:write"])]


@router.get("", response_model=Page[AlertRuleOut], responses=errors(422), summary="List alert rules")
def list_rules(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
               enabled: bool | None = Query(None, description="Only enabled (true) or disabled (false) rules"),
               severity: Severity | None = Query(None, description="critical, warning or info"),
               metric: MetricName | None = Query(None, description="Rules on this metric")) -> Page[AlertRuleOut]:
    stmt = service.listing(principal.team_id, enabled=enabled, severity=severity, metric=metric)
    page = paginate(session, stmt, id_column=AlertRule.id, params=params, default_sort="id",
                    sortable={"name": AlertRule.name, "metric": AlertRule.metric, "severity": AlertRule.severity,
                              "created_at": AlertRule.created_at})
    return page_of(page, AlertRuleOut.of)


@router.post("", status_code=201, response_model=AlertRuleOut, responses=errors(400, 413, 415, 422),
             summary="Create an alert rule",
             description="`aggregation` of `metric` over `window_s` seconds, compared with `threshold` by "
                         "`operator`, holding for `for_s` seconds, fires for each server (and label set) in scope; "
                         "it resolves once back past `recovery_threshold` (or the threshold). Evaluated every "
                         "HOSTATLAS_ALERT_INTERVAL seconds (15).")
def create_rule(body: AlertRuleCreate, principal: Writer, session: DbSession) -> AlertRuleOut:
    rule = service.create_rule(session, team_id=principal.team_id, fields=body.model_dump(exclude_unset=True),
                               now=utcnow())
    return AlertRuleOut.of(rule)


@router.post("/backtest", response_model=BacktestAnswer, responses=errors(400, 413, 415, 422),
             summary="Backtest an alert rule",
             description="The intervals in which the rule (the fields of a creation; `name` optional) would have "
                         "fired between `from` and `to` on the stored telemetry, evaluated as the worker does: "
                         "every HOSTATLAS_ALERT_INTERVAL seconds, every series ok at `from`. At most a day of "
                         "evaluations at the default interval (422 `range_too_large`).")
def backtest_rule(body: BacktestRequest, principal: Reader, session: DbSession,
                  runtime: AppRuntime) -> BacktestAnswer:
    fields = body.model_dump(exclude_unset=True, exclude={"from_", "to"})
    return backtest.backtest(session, runtime.part(Telemetry).caught_up(), team_id=principal.team_id,
                             fields=fields, start=body.from_, end=body.to, every=runtime.settings.alert_interval)


@router.get("/{rule_id}", response_model=AlertRuleOut, responses=errors(404, 422), summary="Get an alert rule")
def get_rule(rule_id: IdPath, principal: Reader, session: DbSession) -> AlertRuleOut:
    return AlertRuleOut.of(service.get_rule(session, team_id=principal.team_id, rule_id=rule_id))


@router.patch("/{rule_id}", response_model=AlertRuleOut, responses=errors(400, 404, 413, 415, 422),
              summary="Update an alert rule",
              description="Any field; `null` clears `recovery_threshold`. Disabling resolves what the rule fires.")
def update_rule(rule_id: IdPath, body: AlertRuleUpdate, principal: Writer, session: DbSession) -> AlertRuleOut:
    rule = service.update_rule(session, team_id=principal.team_id, rule_id=rule_id,
                               changes=body.model_dump(exclude_unset=True), now=utcnow())
    return AlertRuleOut.of(rule)


@router.delete("/{rule_id}", status_code=204, responses=errors(404, 422), summary="Delete an alert rule",
               description="What it fires is resolved first; its states and history go with it.")
def delete_rule(rule_id: IdPath, principal: Writer, session: DbSession) -> None:
    service.delete_rule(session, team_id=principal.team_id, rule_id=rule_id, now=utcnow())


@router.get("/{rule_id}/history", response_model=Page[TransitionOut], responses=errors(404, 422),
            summary="List an alert rule's state changes", description="Every transition, newest first.")
def list_history(rule_id: IdPath, principal: Reader, session: DbSession,
                 params: ListParams = Depends(list_params)) -> Page[TransitionOut]:
    stmt = service.history_listing(session, team_id=principal.team_id, rule_id=rule_id)
    page = paginate(session, stmt, id_column=AlertTransition.id, params=params, default_sort="-id",
                    sortable={"at": AlertTransition.at})
    names = _hostnames(session, principal.team_id, page)
    return page_of(page, lambda row: _transition_out(row, names))


@router.get("/{rule_id}/states", response_model=Page[AlertStateOut], responses=errors(404, 422),
            summary="List an alert rule's pending and firing series",
            description="One entry per server and label set that is pending or firing; every other one is ok.")
def list_states(rule_id: IdPath, principal: Reader, session: DbSession,
                params: ListParams = Depends(list_params)) -> Page[AlertStateOut]:
    stmt = service.state_listing(session, team_id=principal.team_id, rule_id=rule_id)
    page = paginate(session, stmt, id_column=AlertState.id, params=params, default_sort="id",
                    sortable={"since": AlertState.since, "state": AlertState.state})
    names = _hostnames(session, principal.team_id, page)
    return page_of(page, lambda row: _state_out(row, names))


def _hostnames(session: Session, team_id: int, page: PageResult[AlertState] | PageResult[AlertTransition],
               ) -> dict[int, str]:
    return service.hostnames(session, team_id, [row.server_id for row in page.rows])


def _transition_out(row: AlertTransition, names: dict[int, str]) -> TransitionOut:
    return TransitionOut(id=row.id, server=ServerRef(id=row.server_id, hostname=names.get(row.server_id, "")),
                         labels=label_pairs(row.labels), at=row.at, from_=AlertStatus(row.from_state),
                         to=AlertStatus(row.to_state), value=row.value, threshold=row.threshold, reason=row.reason,
                         incident_id=row.incident_id)


def _state_out(row: AlertState, names: dict[int, str]) -> AlertStateOut:
    return AlertStateOut(server=ServerRef(id=row.server_id, hostname=names.get(row.server_id, "")),
                         labels=label_pairs(row.labels), state=AlertStatus(row.state), since=row.since,
                         pending_since=row.pending_since, last_value=row.last_value,
                         last_evaluated_at=row.last_evaluated_at, incident_id=row.incident_id,
                         suppressed=row.suppressed)
