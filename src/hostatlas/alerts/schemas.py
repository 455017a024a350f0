"""Alert rules as the API shows them, the requests that make, change and backtest them, their states and history,
and the ``alert.triggered`` / ``alert.resolved`` event data."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from hostatlas.alerts.models import AlertRule, AlertStatus, NoData, Operator, Scope
from hostatlas.http.types import Flag, Id, NonNegativeInt, Storable, Timestamp, TimestampIn
from hostatlas.incidents.models import Severity
from hostatlas.servers.schemas import ServerRef, Tag
from hostatlas.telemetry.storage.contract import Agg
from hostatlas.telemetry.storage.series import MAX_LABEL_VALUE, MAX_LABELS

# Bounds (service.py enforces them too, for callers other than the API). The window is at least one agent
# report interval (15 s) and at most a day, like ``for``: past that a rule is a report, not an alert.
MIN_WINDOW = 15
MAX_SECONDS = 86_400
MAX_SERVER_IDS = 1000
MAX_TAGS = 50
METRIC_PATTERN = r"^[a-z][a-z0-9_.]{0,127}$"
LABEL_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,63}$"

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), Storable]
Description = Annotated[str, StringConstraints(max_length=1000), Storable]
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=METRIC_PATTERN), Storable]
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=LABEL_NAME_PATTERN), Storable]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE, pattern=r"^[^,=]*$"), Storable]
LabelFilters = Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)]
Window = Annotated[int, Strict(), Field(ge=MIN_WINDOW, le=MAX_SECONDS)]
ForSeconds = Annotated[int, Strict(), Field(ge=0, le=MAX_SECONDS)]
Threshold = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=-1e15, le=1e15)]
ServerIds = Annotated[list[Id], Field(max_length=MAX_SERVER_IDS)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]


class AlertRuleOut(BaseModel):
    """An alert rule as lists, its detail and the alert event payloads show it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 3, "name": "Disk almost full", "description": "", "metric": "disk.used_percent",
        "label_filters": {"mount": "/"}, "aggregation": "avg", "window_s": 300, "operator": ">=", "threshold": 90.0,
        "for_s": 300, "recovery_threshold": 85.0, "severity": "critical", "scope": "tags", "server_ids": [],
        "tags": ["prod"], "no_data": "keep", "enabled": True, "last_error": None,
        "created_at": "2026-03-21T14:35:00Z", "updated_at": "2026-03-21T14:35:00Z",
    }]})

    id: Id
    name: str
    description: str
    metric: str
    label_filters: dict[str, str] = Field(description="Only series carrying every one of these labels")
    aggregation: Agg = Field(description="How the points of the window are reduced to one value per series")
    window_s: int = Field(description="Seconds of points aggregated at each evaluation")
    operator: Operator
    threshold: float
    for_s: int = Field(description="Seconds the condition must hold before the rule fires (pending meanwhile)")
    recovery_threshold: float | None = Field(description="A firing alert resolves only once the value is back "
                                                         "past this; null: once the condition stops holding")
    severity: Severity
    scope: Scope = Field(description="all: every server of the team; servers: `server_ids`; tags: the servers "
                                     "carrying any of `tags`")
    server_ids: list[int]
    tags: list[str]
    no_data: NoData = Field(description="A series or server without points in the window: ok resolves, alert "
                                        "counts as the condition holding, keep changes nothing")
    enabled: bool
    last_error: str | None = Field(description="Why the last evaluation failed; null once one succeeds")
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, rule: AlertRule) -> AlertRuleOut:
        return cls(id=rule.id, name=rule.name, description=rule.description, metric=rule.metric,
                   label_filters=dict(rule.label_filters or {}), aggregation=Agg(rule.aggregation),
                   window_s=rule.window_s, operator=Operator(rule.operator), threshold=rule.threshold,
                   for_s=rule.for_s, recovery_threshold=rule.recovery_threshold, severity=Severity(rule.severity),
                   scope=Scope(rule.scope), server_ids=list(rule.server_ids or []), tags=list(rule.tags or []),
                   no_data=NoData(rule.no_data), enabled=rule.enabled, last_error=rule.last_error,
                   created_at=rule.created_at, updated_at=rule.updated_at)


class AlertRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "CPU hot", "metric": "cpu.percent", "operator": ">=", "threshold": 95, "for_s": 900},
        {"name": "Disk almost full", "metric": "disk.used_percent", "label_filters": {"mount": "/"},
         "aggregation": "avg", "window_s": 300, "operator": ">=", "threshold": 90, "recovery_threshold": 85,
         "for_s": 300, "severity": "critical", "scope": "tags", "tags": ["prod"], "no_data": "keep"},
    ]})

    name: Name
    description: Description = ""
    metric: MetricName
    label_filters: LabelFilters = Field(default_factory=dict)
    aggregation: Agg = Agg.AVG
    window_s: Window = Field(300, description=f"Seconds ({MIN_WINDOW}..{MAX_SECONDS})")
    operator: Operator
    threshold: Threshold
    for_s: ForSeconds = Field(0, description=f"Seconds (0..{MAX_SECONDS}); 0 fires at the first evaluation")
    recovery_threshold: Threshold | None = Field(None, description="On the safe side of the threshold (below it "
                                                                   "for > and >=, above it for < and <=); not "
                                                                   "for == and !=")
    severity: Severity = Severity.WARNING
    scope: Scope = Scope.ALL
    server_ids: ServerIds = Field(default_factory=list, description="The team's servers, with scope `servers`")
    tags: Tags = Field(default_factory=list, description="With scope `tags`: servers carrying any of them")
    no_data: NoData = NoData.KEEP
    enabled: Flag = True


class AlertRuleUpdate(BaseModel):
    """Every field optional; ``null`` clears ``recovery_threshold``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"threshold": 92, "recovery_threshold": 88}, {"enabled": False}]})

    name: Name | None = None
    description: Description | None = None
    metric: MetricName | None = None
    label_filters: LabelFilters | None = None
    aggregation: Agg | None = None
    window_s: Window | None = None
    operator: Operator | None = None
    threshold: Threshold | None = None
    for_s: ForSeconds | None = None
    recovery_threshold: Threshold | None = None
    severity: Severity | None = None
    scope: Scope | None = None
    server_ids: ServerIds | None = None
    tags: Tags | None = None
    no_data: NoData | None = None
    enabled: Flag | None = None


class AlertStateOut(BaseModel):
    """A series (server and label set) of the rule that is pending or firing; every other one is ok."""

    server: ServerRef
    labels: dict[str, str]
    state: AlertStatus
    since: Timestamp
    pending_since: Timestamp | None
    last_value: float | None
    last_evaluated_at: Timestamp
    incident_id: Id | None
    suppressed: bool = Field(description="Fired while its server was offline: attached to the server's incident, "
                                         "no alert event")


class TransitionOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: Id
    server: ServerRef
    labels: dict[str, str]
    at: Timestamp
    from_: AlertStatus = Field(alias="from", serialization_alias="from")
    to: AlertStatus
    value: float | None
    threshold: float
    reason: str = Field(description="threshold, cleared, recovered, no_data, suppressed: server offline, "
                                    "out_of_scope, disabled")
    incident_id: Id | None


class BacktestRequest(AlertRuleCreate):
    """A rule as for creation (the name may be left out) and the range to replay it over."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={"examples": [
        {"metric": "cpu.percent", "operator": ">=", "threshold": 95, "for_s": 900,
         "from": "2026-03-20T00:00:00Z", "to": "2026-03-21T00:00:00Z"}]})

    name: Name = "backtest"
    from_: TimestampIn = Field(alias="from", description="Start of the range")
    to: TimestampIn = Field(description="End of the range (at most a day after `from`)")


class BacktestInterval(BaseModel):
    server: ServerRef
    labels: dict[str, str]
    start: Timestamp = Field(description="The evaluation at which it started firing")
    end: Timestamp | None = Field(description="The evaluation at which it resolved; null if firing at `to`")
    peak_value: float | None = Field(description="The worst value while firing (highest for >, >=, ==, !=; "
                                                 "lowest for <, <=); null if only no data fired it")


class BacktestAnswer(BaseModel):
    intervals: list[BacktestInterval]
    evaluations: NonNegativeInt = Field(description="Evaluation instants replayed (one every "
                                                    "HOSTATLAS_ALERT_INTERVAL seconds)")


class AlertEventData(BaseModel):
    """``alert.triggered`` and ``alert.resolved``: the rule as ``GET /api/v1/alert-rules/{id}`` shows it, the
    server and series, the value and the thresholds."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "rule": AlertRuleOut.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
        "server": {"id": 47, "hostname": "web-prod-01"}, "labels": {"mount": "/"}, "value": 93.4,
        "threshold": 90.0, "recovery_threshold": 85.0, "state": "firing", "incident_id": 88,
        "at": "2026-03-21T14:35:00Z",
    }]})

    rule: AlertRuleOut
    server: ServerRef
    labels: dict[str, str]
    value: float | None = Field(description="The aggregate that moved it; null when no data did")
    threshold: float
    recovery_threshold: float | None
    state: Literal["firing", "ok"]
    incident_id: Id | None
    at: Timestamp
