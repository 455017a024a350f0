"""``/api/v1/incidents``: thin handlers over ``incidents.service``. Agents' crash reports arrive elsewhere
(``POST /api/v1/agent/incidents``) and land in the same incidents through ``service.report``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Security
from pydantic import StringConstraints

from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.clock import utcnow
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import ListParams, Page, PageMeta, list_params, paginate
from hostatlas.http.types import IdPath, IdQuery, Storable, TimestampIn
from hostatlas.incidents import service
from hostatlas.incidents.models import SERVICE_MAX, Incident, IncidentStatus, IncidentType, Severity, Source
from hostatlas.incidents.schemas import (
    EntryOut,
    IncidentAction,
    IncidentCreate,
    IncidentDetail,
    IncidentOut,
    NoteCreate,
)
from hostatlas.incidents.views import detail_of, entry_out, outs

router = APIRouter(prefix="/api/v1/incidents", tags=["Incidents"])

Reader = Annotated[Principal, Security(authenticated, scopes=["incidents:read"])]
Writer = Annotated[Principal, Security(authenticated, scopes=["incidents:write"])]
ServiceFilter = Annotated[str, StringConstraints(max_length=SERVICE_MAX), Storable]
# Severity and resolved_at are not offered: keyset pages need a non-null column, and severity would sort by name.
SORTABLE = {"detected_at": Incident.detected_at, "status": Incident.status, "updated_at": Incident.updated_at}


@router.get("", response_model=Page[IncidentOut], responses=errors(422), summary="List incidents",
            description="Newest first by default. `status` and `severity` may repeat (`?status=open&status="
                        "acknowledged`). Incidents attached to a server's outage show in that outage's detail, and "
                        "here only with `include_attached=true`.")
def list_incidents(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                   status: list[IncidentStatus] | None = Query(None, max_length=3,
                                                               description="open, acknowledged, resolved"),
                   severity: list[Severity] | None = Query(None, max_length=3, description="critical, warning, info"),
                   server_id: IdQuery | None = Query(None, description="Incidents on this server"),
                   service_name: ServiceFilter | None = Query(None, alias="service", description="e.g. nginx"),
                   type: IncidentType | None = Query(None, description="automatic or manual"),
                   source: Source | None = Query(None, description="manual, server, alert, heartbeat, certificate, "
                                                                   "crash"),
                   since: TimestampIn | None = Query(None, description="Detected at or after (ISO-8601)"),
                   until: TimestampIn | None = Query(None, description="Detected before (ISO-8601)"),
                   include_attached: Annotated[bool, Query(description="Also list incidents attached to a server "
                                                                       "outage")] = False,
                   ) -> Page[IncidentOut]:
    stmt = service.listing(principal.team_id, statuses=status or (), severities=severity or (), server_id=server_id,
                           service=service_name, type=type, source=source, since=since, until=until,
                           include_attached=include_attached)
    page = paginate(session, stmt, id_column=Incident.id, params=params, sortable=SORTABLE)
    return Page(data=outs(session, page.rows),
                meta=PageMeta(total=page.total, per_page=page.per_page, next_cursor=page.next_cursor))


@router.post("", status_code=201, response_model=IncidentDetail, responses=errors(400, 413, 415, 422),
             summary="Open an incident by hand",
             description="A `manual` incident, announced with `incident.created`. The key that opened it is on "
                         "the timeline.")
def create_incident(body: IncidentCreate, principal: Writer, session: DbSession) -> IncidentDetail:
    incident = service.create_incident(session, team_id=principal.team_id, actor=principal.actor,
                                       title=body.title, severity=body.severity, server_id=body.server_id,
                                       service=body.service, detected_at=body.detected_at, message=body.message,
                                       now=utcnow())
    return detail_of(session, incident)


@router.get("/{incident_id}", response_model=IncidentDetail, responses=errors(404, 422), summary="Get an incident",
            description="With its timeline (opened, every follow-up with its data, acknowledged by which key, "
                        "notes, resolved, reopened, attachments) and the incidents attached to it.")
def get_incident(incident_id: IdPath, principal: Reader, session: DbSession) -> IncidentDetail:
    return detail_of(session, service.get_incident(session, team_id=principal.team_id, incident_id=incident_id))


@router.post("/{incident_id}/acknowledge", response_model=IncidentDetail, responses=errors(400, 404, 409, 415, 422),
             summary="Acknowledge an incident",
             description="Someone is on it: `incident.acknowledged` once; acknowledging again changes nothing. "
                         "A resolved incident is 409 (reopen it first).")
def acknowledge(incident_id: IdPath, principal: Writer, session: DbSession,
                body: IncidentAction | None = None) -> IncidentDetail:
    incident = service.acknowledge(session, team_id=principal.team_id, incident_id=incident_id,
                                   actor=principal.actor, message=body.message if body else "", now=utcnow())
    return detail_of(session, incident)


@router.post("/{incident_id}/resolve", response_model=IncidentDetail, responses=errors(400, 404, 415, 422),
             summary="Resolve an incident",
             description="`incident.resolved`; resolving again changes nothing. An automatic incident whose problem "
                         "persists is reopened by its source's next report.")
def resolve(incident_id: IdPath, principal: Writer, session: DbSession,
            body: IncidentAction | None = None) -> IncidentDetail:
    incident = service.resolve(session, team_id=principal.team_id, incident_id=incident_id, actor=principal.actor,
                               message=body.message if body else "", now=utcnow())
    return detail_of(session, incident)


@router.post("/{incident_id}/reopen", response_model=IncidentDetail, responses=errors(400, 404, 409, 415, 422),
             summary="Reopen an incident",
             description="`incident.reopened`; an unresolved incident is left as it is. 409 when a newer incident "
                         "of the same problem is unresolved.")
def reopen(incident_id: IdPath, principal: Writer, session: DbSession,
           body: IncidentAction | None = None) -> IncidentDetail:
    incident = service.reopen(session, team_id=principal.team_id, incident_id=incident_id, actor=principal.actor,
                              message=body.message if body else "", now=utcnow())
    return detail_of(session, incident)


@router.post("/{incident_id}/notes", status_code=201, response_model=EntryOut,
             responses=errors(400, 404, 413, 415, 422), summary="Add a note to an incident's timeline")
def add_note(incident_id: IdPath, body: NoteCreate, principal: Writer, session: DbSession) -> EntryOut:
    entry = service.add_note(session, team_id=principal.team_id, incident_id=incident_id, actor=principal.actor,
                             message=body.message, now=utcnow())
    session.flush()
    return entry_out(entry)
