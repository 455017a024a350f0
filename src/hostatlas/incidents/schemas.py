"""Incidents as the API shows them (the seed's list shape plus source, state times and attachments), their
timeline, and the requests that make and change them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from hostatlas.http.types import Id, NonNegativeInt, Storable, Timestamp, TimestampIn
from hostatlas.incidents.models import (
    SERVICE_MAX,
    TITLE_MAX,
    EntryKind,
    IncidentStatus,
    IncidentType,
    Severity,
    Source,
)
from hostatlas.servers.schemas import ServerRef

# A note or a message is prose for people; a crash's logs travel in an entry's data, bounded by its sender.
MESSAGE_MAX = 10_000

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX), Storable]
ServiceName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=SERVICE_MAX), Storable]
Message = Annotated[str, StringConstraints(max_length=MESSAGE_MAX), Storable]
NoteText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MESSAGE_MAX), Storable]


class IncidentOut(BaseModel):
    """An incident as lists, its detail and the incident.* event payloads show it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 891, "title": "nginx process stopped", "severity": "critical", "status": "open",
        "server": {"id": 47, "hostname": "web-prod-01"}, "service": "nginx", "detected_at": "2026-03-21T14:28:41Z",
        "type": "automatic", "source": "crash", "acknowledged_at": None, "acknowledged_by": None,
        "resolved_at": None, "resolved_by": None, "time_to_resolve_s": None, "parent_id": None,
        "attached_count": 0,
    }]})

    id: Id
    title: str
    severity: Severity
    status: IncidentStatus
    server: ServerRef | None = Field(description="The server it happened on, if any (null once it is deleted)")
    service: str | None
    detected_at: Timestamp
    type: IncidentType
    source: Source = Field(description="What opened it: manual, server (offline), alert, heartbeat, certificate, "
                                       "crash (an agent's report)")
    acknowledged_at: Timestamp | None
    acknowledged_by: str | None = Field(description="`api_key:<id>:<name>` of the key that acknowledged it")
    resolved_at: Timestamp | None
    resolved_by: str | None = Field(description="`api_key:<id>:<name>`, `agent` or `system` (recovery)")
    time_to_resolve_s: NonNegativeInt | None = Field(description="Seconds from detected_at to resolved_at")
    parent_id: Id | None = Field(description="The server-offline incident this one is attached to: it happened "
                                             "while its server was down")
    attached_count: NonNegativeInt = Field(description="Incidents attached to this one (a server outage's)")


class EntryOut(BaseModel):
    id: Id
    at: Timestamp
    kind: EntryKind
    actor: str = Field(description="`api_key:<id>:<name>`, `agent` or `system`")
    message: str
    data: dict[str, Any] = Field(description="What was known then: a crash report's logs, metrics and state, "
                                             "an alert's value and threshold, an attached incident's id...")


class IncidentDetail(IncidentOut):
    timeline: list[EntryOut] = Field(description="Everything that happened to it, oldest first")
    attached: list[IncidentOut] = Field(description="The incidents attached to this one, oldest first")


class IncidentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"title": "Checkout returns 502", "severity": "critical", "server_id": 47, "service": "nginx",
         "message": "Customers report failed payments since 14:20"}]})

    title: Title
    severity: Severity
    server_id: Id | None = Field(None, description="The team's server it concerns")
    service: ServiceName | None = None
    detected_at: TimestampIn | None = Field(None, description="When it started; now when left out")
    message: Message = Field("", description="The first timeline entry's text")


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: NoteText


class IncidentAction(BaseModel):
    """Acknowledge, resolve or reopen, with an optional word for the timeline."""

    model_config = ConfigDict(extra="forbid")

    message: Message = ""
