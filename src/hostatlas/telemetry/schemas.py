from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hostatlas.servers.schemas import ServerRef


class MetricSeriesIn(BaseModel):
    metric: str = Field(examples=["disk.used_percent"])
    labels: dict[str, str] = Field(default_factory=dict, examples=[{"mount": "/"}])
    points: list[tuple[float, float]] = Field(description="[unix_seconds, value] pairs")


class MetricsBatch(BaseModel):
    """Documentation only: the route decodes the raw body itself, entry by entry."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"series": [
        {"metric": "cpu.percent", "labels": {}, "points": [[1774103521, 12.5], [1774103536, 14.0]]},
        {"metric": "disk.used_percent", "labels": {"mount": "/"}, "points": [[1774103521, 61.2]]},
    ]}]})

    series: list[MetricSeriesIn]


class LogEntryIn(BaseModel):
    ts: float | None = Field(None, description="When the agent read the line (unix seconds)")
    source: str = Field("", examples=["/var/log/nginx/error.log"])
    line: str


class LogsBatch(BaseModel):
    """Documentation only: the route decodes the raw body itself, entry by entry."""

    entries: list[LogEntryIn]


class IngestProblem(BaseModel):
    model_config = ConfigDict(extra="allow")

    reason: str = Field(examples=["in_the_future"])
    message: str


class IngestResult(BaseModel):
    accepted: int = Field(description="Entries stored (committed before this answer)")
    dropped: int
    problems: list[IngestProblem] = Field(description="Where and why entries were dropped (first 100)")


class SeriesOut(BaseModel):
    metric: str
    labels: dict[str, str]
    server: ServerRef | None = None
    points: list[tuple[int, float]]


class MetricsMeta(BaseModel):
    from_: int = Field(alias="from")
    to: int
    step: int
    agg: str
    tier: str

    model_config = ConfigDict(populate_by_name=True)


class MetricsAnswer(BaseModel):
    data: list[SeriesOut]
    meta: MetricsMeta


class MetricName(BaseModel):
    metric: str
    labels: dict[str, str]


class LogOut(BaseModel):
    id: int
    server: ServerRef
    ts: float = Field(description="Unix seconds, with sub-seconds")
    time: str = Field(description="The same instant, ISO-8601 UTC with milliseconds")
    source: str
    level: str
    message: str
    fields: dict[str, Any]
    line: str
