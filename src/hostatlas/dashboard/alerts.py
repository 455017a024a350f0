"""``/alerts``: the alert rules (what fires now, the last changes), their creation and editing forms with a backtest
chart drawn before anything is saved, enabling, disabling and deletion.

The forms are built from the API's request models (``AlertRuleCreate``'s fields, their defaults and descriptions)
and validated by them; then the calls ``alerts/routes.py`` makes: ``service.create_rule``, ``service.update_rule``,
``service.delete_rule`` and, for the preview, ``backtest`` (here ``backtest.replay``, which also answers the window
values it replayed, for the chart).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from hostatlas.alerts import backtest, service
from hostatlas.alerts.models import AlertRule, AlertState, AlertStatus, AlertTransition, NoData, Operator, Scope
from hostatlas.alerts.schemas import AlertRuleCreate, AlertRuleOut, AlertRuleUpdate, BacktestRequest, MetricName
from hostatlas.clock import utcnow
from hostatlas.dashboard.rendering import field_errors, render
from hostatlas.dashboard.routing import PageRoute
from hostatlas.dashboard.viewer import Viewer, csrf_checked, reader, writer
from hostatlas.errors import InvalidInput
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.pagination import ListParams, list_params, paginate
from hostatlas.http.types import IdPath
from hostatlas.incidents.models import Severity
from hostatlas.servers import service as servers
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.storage.contract import Agg
from hostatlas.telemetry.storage.series import label_pairs

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# The form, from the creation schema: each field's input kind; choices come from the field's enum.
CHOICES: dict[str, list[str]] = {"aggregation": [a.value for a in Agg], "operator": [o.value for o in Operator],
                                 "severity": [s.value for s in Severity], "scope": [s.value for s in Scope],
                                 "no_data": [n.value for n in NoData]}
INTEGERS = ("window_s", "for_s")
NUMBERS = ("threshold", "recovery_threshold")
LABELS = {"name": "Name", "description": "Description", "metric": "Metric", "label_filters": "Label filters",
          "aggregation": "Aggregation", "window_s": "Window (seconds)", "operator": "Condition",
          "threshold": "Threshold", "for_s": "For (seconds)", "recovery_threshold": "Recovery threshold (optional)",
          "severity": "Severity", "scope": "Scope", "server_ids": "Servers", "tags": "Tags", "no_data": "No data",
          "enabled": "Enabled"}
HELP = {"label_filters": "One label=value per line, e.g. mount=/", "tags": "Comma-separated: prod, web",
        "metric": "e.g. cpu.percent, mem.used_percent, disk.used_percent"}
RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86_400}
CHART_SERIES = 8  # series drawn in the preview (the ones that fired first, then the others)
SERVER_CHOICES = 500


def field_help(name: str) -> str:
    described = AlertRuleCreate.model_fields[name].description or ""
    return ". ".join(part.rstrip(".") for part in (HELP.get(name, ""), described) if part)


def blank_form() -> dict[str, str]:
    """The creation schema's defaults as form values."""
    form: dict[str, str] = {}
    for name, info in AlertRuleCreate.model_fields.items():
        default = info.get_default(call_default_factory=True)
        form[name] = _shown(name, default)
    form["enabled"] = "true"
    form["operator"] = ">="
    return form


def _shown(name: str, value: Any) -> str:
    if value is None or value is ...:
        return ""
    if name == "label_filters":
        return "\n".join(f"{k}={v}" for k, v in dict(value).items())
    if name == "tags":
        return ", ".join(value)
    if name == "server_ids":
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else ""
    if hasattr(value, "value"):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def form_of(rule: AlertRuleOut) -> dict[str, str]:
    return {name: _shown(name, getattr(rule, name)) for name in AlertRuleCreate.model_fields}


async def posted_form(request: Request) -> tuple[dict[str, str], dict[str, Any]]:
    """The posted fields as the form shows them again, and as the request model's input."""
    data = await request.form()
    form = {name: str(data.get(name, "")) for name in AlertRuleCreate.model_fields}
    form["server_ids"] = ",".join(str(v) for v in data.getlist("server_ids"))
    form["enabled"] = "true" if data.get("enabled") else ""
    form["range"] = str(data.get("range", "6h"))
    body: dict[str, Any] = {}
    for name, text in form.items():
        if name == "range":
            continue
        value: Any = text.strip() if name != "description" else text
        if name in INTEGERS or name in NUMBERS:
            if value == "":
                if name == "recovery_threshold":
                    body[name] = None
                continue
            value = _number(value, integer=name in INTEGERS)
        elif name == "label_filters":
            value = dict(_pair(line) for line in text.splitlines() if line.strip())
        elif name == "tags":
            value = [tag.strip() for tag in text.split(",") if tag.strip()]
        elif name == "server_ids":
            value = [int(v) if v.isdigit() else v for v in text.split(",") if v]
        elif name == "enabled":
            value = bool(text)
        body[name] = value
    return form, body


def _number(text: str, *, integer: bool) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text  # the schema names the problem
    return int(number) if integer and number.is_integer() else number


def _pair(line: str) -> tuple[str, str]:
    key, _, value = line.partition("=")
    return key.strip(), value.strip()


def schema_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for problem in exc.errors():
        loc = problem["loc"]
        name = "to" if loc and loc[0] in ("from", "from_") else str(loc[0]) if loc else ""
        errors.setdefault(name, problem["msg"])
    return errors


def _server_choices(session: Session, viewer: Viewer) -> list[servers.ServerChoice]:
    return servers.choices(session, viewer.team_id, limit=SERVER_CHOICES)


def _form_page(request: Request, session: Session, viewer: Viewer, form: dict[str, str],
               errors: dict[str, str], rule: AlertRuleOut | None, status: int = 200) -> Response:
    return render(request, "alerts/form.html", {
        "form": form, "errors": errors, "rule": rule, "choices": CHOICES, "labels": LABELS, "help": field_help,
        "servers": _server_choices(session, viewer), "ranges": list(RANGES),
        "selected_servers": set(form.get("server_ids", "").split(","))}, status=status)


# --- the list ------------------------------------------------------------------------------------------------

@router.get("/alerts")
def rule_list(request: Request, session: DbSession, params: ListParams = Depends(list_params),
              enabled: bool | None = Query(None), severity: Severity | None = Query(None),
              metric: MetricName | None = Query(None),
              viewer: Viewer = Depends(reader("alert_rules:read"))) -> Response:
    stmt = service.listing(viewer.team_id, enabled=enabled, severity=severity, metric=metric)
    page = paginate(session, stmt, id_column=AlertRule.id, params=params, default_sort="id",
                    sortable={"name": AlertRule.name, "metric": AlertRule.metric, "severity": AlertRule.severity,
                              "created_at": AlertRule.created_at})
    rules = [AlertRuleOut.of(row) for row in page.rows]
    ids = [rule.id for rule in rules]
    states: dict[int, list[AlertState]] = {rule_id: [] for rule_id in ids}
    last: dict[int, AlertTransition] = {}
    if ids:
        for state in session.scalars(select(AlertState).where(AlertState.team_id == viewer.team_id,
                                                              AlertState.rule_id.in_(ids))
                                     .order_by(AlertState.since.desc()).limit(500)):
            states[state.rule_id].append(state)
        for rule_id in ids:
            transition = session.scalar(service.history_listing(session, team_id=viewer.team_id, rule_id=rule_id)
                                        .order_by(AlertTransition.id.desc()).limit(1))
            if transition is not None:
                last[rule_id] = transition
    server_ids = [s.server_id for group in states.values() for s in group] + [t.server_id for t in last.values()]
    names = service.hostnames(session, viewer.team_id, server_ids)
    return render(request, "alerts/list.html", {
        "rules": rules, "meta": page, "states": states, "last": last, "names": names, "label_pairs": label_pairs,
        "filters": {"enabled": enabled, "severity": severity, "metric": metric}, "severities": list(Severity),
        "firing": AlertStatus.FIRING.value})


# --- create, edit, preview --------------------------------------------------------------------------------------

@router.get("/alerts/new")
def rule_new(request: Request, session: DbSession,
             viewer: Viewer = Depends(writer("alert_rules:write"))) -> Response:
    return _form_page(request, session, viewer, {**blank_form(), "range": "6h"}, {}, None)


@router.post("/alerts/new")
async def rule_create(request: Request, session: DbSession,
                      viewer: Viewer = Depends(writer("alert_rules:write"))) -> Response:
    form, body = await posted_form(request)
    try:
        valid = AlertRuleCreate.model_validate(body)
        rule = service.create_rule(session, team_id=viewer.team_id, fields=valid.model_dump(exclude_unset=True),
                                   now=utcnow())
    except ValidationError as exc:
        return _form_page(request, session, viewer, form, schema_errors(exc), None, 422)
    except InvalidInput as exc:
        session.rollback()
        return _form_page(request, session, viewer, form, field_errors(exc), None, 422)
    return RedirectResponse(f"/alerts?created={rule.id}", status_code=303)


@router.get("/alerts/{rule_id}/edit")
def rule_edit(request: Request, rule_id: IdPath, session: DbSession,
              viewer: Viewer = Depends(writer("alert_rules:write"))) -> Response:
    rule = AlertRuleOut.of(service.get_rule(session, team_id=viewer.team_id, rule_id=rule_id))
    return _form_page(request, session, viewer, {**form_of(rule), "range": "6h"}, {}, rule)


@router.post("/alerts/{rule_id}/edit")
async def rule_update(request: Request, rule_id: IdPath, session: DbSession,
                      viewer: Viewer = Depends(writer("alert_rules:write"))) -> Response:
    rule = AlertRuleOut.of(service.get_rule(session, team_id=viewer.team_id, rule_id=rule_id))
    form, body = await posted_form(request)
    try:
        changes = AlertRuleUpdate.model_validate(body).model_dump(exclude_unset=True)
        service.update_rule(session, team_id=viewer.team_id, rule_id=rule_id, changes=changes, now=utcnow())
    except ValidationError as exc:
        return _form_page(request, session, viewer, form, schema_errors(exc), rule, 422)
    except InvalidInput as exc:
        session.rollback()
        return _form_page(request, session, viewer, form, field_errors(exc), rule, 422)
    return RedirectResponse(f"/alerts?updated={rule_id}", status_code=303)


async def previewer(request: Request, viewer: Viewer = Depends(reader("alert_rules:read"))) -> Viewer:
    """The backtest reads (``alert_rules:read`` as in the API) but comes from a form: CSRF-checked too."""
    await csrf_checked(request)
    return viewer


@router.post("/alerts/backtest")
async def rule_backtest(request: Request, session: DbSession, viewer: Viewer = Depends(previewer)) -> Response:
    """The API's backtest of the form as it stands (nothing saved): its intervals, and the chart of the replayed
    window values with the threshold. Problems are answered in the preview (200), for htmx to show them."""
    form, body = await posted_form(request)
    app = runtime.current(request)
    end = utcnow()
    start = end - timedelta(seconds=RANGES.get(form["range"], RANGES["6h"]))
    body = {**body, "name": body.get("name") or "backtest", "from": start.isoformat(), "to": end.isoformat()}
    context: dict[str, Any] = {"errors": {}, "answer": None, "chart": None, "start": start, "end": end}
    try:
        request_body = BacktestRequest.model_validate(body)
        fields = request_body.model_dump(exclude_unset=True, exclude={"from_", "to"})
        replayed = backtest.replay(session, app.part(Telemetry).caught_up(), team_id=viewer.team_id,
                                   fields=fields, start=request_body.from_, end=request_body.to,
                                   every=app.settings.alert_interval)
    except ValidationError as exc:
        context["errors"] = schema_errors(exc)
    except InvalidInput as exc:
        context["errors"] = field_errors(exc)
    else:
        context["answer"] = replayed.answer
        context["chart"] = _chart(replayed, request_body.threshold, request_body.recovery_threshold)
    return render(request, "alerts/backtest.html", {**context, "labels": LABELS})


def _chart(replayed: backtest.Replay, threshold: float, recovery: float | None) -> dict[str, Any]:
    """What alerts.js draws: the window values per series (those that fired first), the thresholds and the
    firing intervals (unix seconds; an open one ends at the range's end)."""
    fired = [(interval.server.id, ",".join(f"{k}={v}" for k, v in sorted(interval.labels.items())))
             for interval in replayed.answer.intervals]
    keys = sorted(replayed.timelines, key=lambda key: (key not in fired, key[0], key[1]))[:CHART_SERIES]
    series = []
    for key in keys:
        covered = replayed.covered.get(key[0])
        name = covered.ref.hostname if covered else f"server {key[0]}"
        series.append({"label": f"{name} {key[1]}".strip(), "values": replayed.timelines[key]})
    last = replayed.times[-1] if replayed.times else 0
    bands = [[int(i.start.timestamp()), int(i.end.timestamp()) if i.end else last]
             for i in replayed.answer.intervals]
    return {"x": replayed.times, "series": series, "threshold": threshold, "recovery": recovery, "bands": bands}


# --- enable, disable, delete ------------------------------------------------------------------------------------

@router.post("/alerts/{rule_id}/enable")
def rule_enable(rule_id: IdPath, session: DbSession,
                viewer: Viewer = Depends(writer("alert_rules:write"))) -> Response:
    service.update_rule(session, team_id=viewer.team_id, rule_id=rule_id, changes={"enabled": True}, now=utcnow())
    return RedirectResponse("/alerts", status_code=303)


@router.post("/alerts/{rule_id}/disable")
def rule_disable(rule_id: IdPath, session: DbSession,
                 viewer: Viewer = Depends(writer("alert_rules:write"))) -> Response:
    service.update_rule(session, team_id=viewer.team_id, rule_id=rule_id, changes={"enabled": False},
                        now=utcnow())
    return RedirectResponse("/alerts", status_code=303)


@router.post("/alerts/{rule_id}/delete")
def rule_delete(rule_id: IdPath, session: DbSession,
                viewer: Viewer = Depends(writer("alert_rules:write"))) -> Response:
    service.delete_rule(session, team_id=viewer.team_id, rule_id=rule_id, now=utcnow())
    return RedirectResponse("/alerts", status_code=303)
