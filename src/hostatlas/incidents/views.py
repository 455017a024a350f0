"""An incident in its API shapes, built a page at a time, and its announcement as an event.

The incident.* events carry ``IncidentOut`` (the list shape, not the timeline): a receiver reads an incident
the way an API client lists it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostatlas.events import service as events
from hostatlas.incidents.models import (
    EntryKind,
    Incident,
    IncidentEntry,
    IncidentStatus,
    IncidentType,
    Severity,
    Source,
)
from hostatlas.incidents.schemas import EntryOut, IncidentDetail, IncidentOut
from hostatlas.servers.models import Server
from hostatlas.servers.schemas import ServerRef

Change = Literal["created", "acknowledged", "resolved", "reopened"]
# A mapping of the event constants, so that the webhook contract test can see which types are recorded.
EVENTS: dict[Change, str] = {"created": events.INCIDENT_CREATED, "acknowledged": events.INCIDENT_ACKNOWLEDGED,
                             "resolved": events.INCIDENT_RESOLVED, "reopened": events.INCIDENT_REOPENED}


def outs(session: Session, incidents: Sequence[Incident]) -> list[IncidentOut]:
    """List shapes for a page of incidents: their servers and attachment counts in one query each."""
    if not incidents:
        return []
    server_ids = {incident.server_id for incident in incidents if incident.server_id is not None}
    servers = {row.id: ServerRef(id=row.id, hostname=row.hostname) for row in session.execute(
        select(Server.id, Server.hostname).where(Server.id.in_(server_ids)))} if server_ids else {}
    # Only a server's outage holds attached incidents: a page (or an announcement) of none skips the count.
    outages = [incident.id for incident in incidents if incident.source == Source.SERVER.value]
    counts: dict[int, int] = {row.parent_id: row.attached for row in session.execute(
        select(Incident.parent_id, func.count().label("attached"))
        .where(Incident.parent_id.in_(outages)).group_by(Incident.parent_id))} if outages else {}
    return [_out(incident, servers.get(incident.server_id or 0), counts.get(incident.id, 0))
            for incident in incidents]


def detail_of(session: Session, incident: Incident) -> IncidentDetail:
    """The incident with its timeline and the incidents attached to it."""
    entries = session.scalars(select(IncidentEntry).where(IncidentEntry.incident_id == incident.id,
                                                          IncidentEntry.team_id == incident.team_id)
                              .order_by(IncidentEntry.id))
    attached = list(session.scalars(select(Incident).where(Incident.parent_id == incident.id,
                                                           Incident.team_id == incident.team_id)
                                    .order_by(Incident.id)))
    out = outs(session, [incident])[0]
    return IncidentDetail(**dict(out), timeline=[entry_out(entry) for entry in entries],
                          attached=outs(session, attached))


def announce(session: Session, incident: Incident, change: Change, at: datetime) -> None:
    """Record the incident's ``change`` as its event, its data the list shape as of now, in the caller's
    transaction."""
    session.flush()
    payload = outs(session, [incident])[0].model_dump(mode="json")
    events.record(session, team_id=incident.team_id, type=EVENTS[change], resource_type="incident",
                  resource_id=incident.id, payload=payload, at=at, server_id=incident.server_id)


def time_to_resolve(incident: Incident) -> int | None:
    if incident.resolved_at is None:
        return None
    return max(0, int((incident.resolved_at - incident.detected_at).total_seconds()))


def _out(incident: Incident, server: ServerRef | None, attached_count: int) -> IncidentOut:
    return IncidentOut(
        id=incident.id, title=incident.title, severity=Severity(incident.severity),
        status=IncidentStatus(incident.status), server=server, service=incident.service,
        detected_at=incident.detected_at, type=IncidentType(incident.type), source=Source(incident.source),
        acknowledged_at=incident.acknowledged_at, acknowledged_by=incident.acknowledged_by,
        resolved_at=incident.resolved_at, resolved_by=incident.resolved_by,
        time_to_resolve_s=time_to_resolve(incident), parent_id=incident.parent_id, attached_count=attached_count)


def entry_out(entry: IncidentEntry) -> EntryOut:
    return EntryOut(id=entry.id, at=entry.at, kind=EntryKind(entry.kind), actor=entry.actor, message=entry.message,
                    data=dict(entry.data or {}))
