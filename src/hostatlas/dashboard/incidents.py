"""``/incidents``: the list (the API's filters and keyset pages, refreshing itself), an incident's detail with its
timeline, and the forms that acknowledge, resolve, reopen, annotate and open incidents.

Every read and write is the call ``incidents/routes.py`` makes (``service.listing`` + ``paginate`` + ``views.outs``,
``views.detail_of``, ``service.acknowledge``...), with the signed-in user's principal: the timeline names them as
``user:<id>:<email>``.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from hostatlas.clock import utcnow
from hostatlas.dashboard.rendering import field_errors, render, validated
from hostatlas.dashboard.routing import PageRoute
from hostatlas.dashboard.viewer import Viewer, reader, writer
from hostatlas.errors import Conflict, InvalidInput
from hostatlas.http.deps import DbSession
from hostatlas.http.pagination import ListParams, list_params, paginate
from hostatlas.http.types import IdPath, IdQuery, TimestampIn
from hostatlas.incidents import service
from hostatlas.incidents.models import Incident, IncidentStatus, IncidentType, Severity, Source
from hostatlas.incidents.routes import SORTABLE, ServiceFilter
from hostatlas.incidents.schemas import IncidentAction, IncidentCreate, IncidentOut, NoteCreate
from hostatlas.incidents.views import detail_of, outs
from hostatlas.servers import service as servers

router = APIRouter(route_class=PageRoute, include_in_schema=False)
SERVER_CHOICES = 500  # the filter's and the form's server menus


def actor_name(actor: str | None) -> str:
    """Who did it, for people: a user's email, an API key's name, ``agent`` or ``system``."""
    if not actor:
        return ""
    kind, _, rest = actor.partition(":")
    if kind in ("user", "api_key") and rest:
        name = rest.partition(":")[2]
        return f"{name} (API key)" if kind == "api_key" else name
    return actor




def _server_choices(session: Session, viewer: Viewer) -> list[servers.ServerChoice]:
    if not viewer.can("servers:read"):
        return []
    return servers.choices(session, viewer.team_id, limit=SERVER_CHOICES)


def _listing_context(request: Request, session: Session, viewer: Viewer, params: ListParams,
                     filters: dict[str, Any]) -> dict[str, Any]:
    stmt = service.listing(viewer.team_id, statuses=filters["status"] or (), severities=filters["severity"] or (),
                           server_id=filters["server_id"], service=filters["service"], type=filters["type"],
                           source=filters["source"], since=filters["since"], until=filters["until"],
                           include_attached=filters["include_attached"])
    page = paginate(session, stmt, id_column=Incident.id, params=params, sortable=SORTABLE)
    filtered = any(value not in (None, [], False) for value in filters.values())
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    return {"incidents": outs(session, page.rows), "meta": page, "filters": filters, "filtered": filtered,
            "live_url": _url("/incidents/live", request.query_params.multi_items()),
            "next_url": _url("/incidents", [*kept, ("cursor", page.next_cursor)]) if page.next_cursor else None,
            "first_url": _url("/incidents", kept) if request.query_params.get("cursor") else None}


def _url(path: str, params: list[tuple[str, str]]) -> str:
    """A list URL with the page's filters: the live partial's links lead to the page, not to the partial."""
    return f"{path}?{urlencode(params)}" if params else path


def _filters(status: list[IncidentStatus] | None = Query(None, max_length=3),
             severity: list[Severity] | None = Query(None, max_length=3),
             server_id: IdQuery | None = Query(None),
             service_name: ServiceFilter | None = Query(None, alias="service"),
             type: IncidentType | None = Query(None),
             source: Source | None = Query(None),
             since: TimestampIn | None = Query(None),
             until: TimestampIn | None = Query(None),
             include_attached: bool = Query(False)) -> dict[str, Any]:
    """The API list's filters, validated the same way."""
    return {"status": status or [], "severity": severity or [], "server_id": server_id, "service": service_name,
            "type": type, "source": source, "since": since, "until": until, "include_attached": include_attached}


Filters = Annotated[dict[str, Any], Depends(_filters)]
NO_FILTERS: dict[str, Any] = {"status": [], "severity": [], "server_id": None, "service": None, "type": None,
                              "source": None, "since": None, "until": None, "include_attached": False}


def _common(session: Session, viewer: Viewer) -> dict[str, Any]:
    return {"statuses": list(IncidentStatus), "severities": list(Severity), "types": list(IncidentType),
            "sources": list(Source), "servers": _server_choices(session, viewer)}


@router.get("/incidents")
def incident_list(request: Request, session: DbSession, filters: Filters, params: ListParams = Depends(list_params),
                  viewer: Viewer = Depends(reader("incidents:read"))) -> Response:
    context = {**_listing_context(request, session, viewer, params, filters), **_common(session, viewer),
               "form": {}, "errors": {}}
    return render(request, "incidents/list.html", context)


@router.get("/incidents/live")
def incident_list_live(request: Request, session: DbSession, filters: Filters,
                       params: ListParams = Depends(list_params),
                       viewer: Viewer = Depends(reader("incidents:read"))) -> Response:
    context = {**_listing_context(request, session, viewer, params, filters)}
    return render(request, "incidents/live.html", context)


@router.post("/incidents")
def incident_create(request: Request, session: DbSession, title: str = Form(""), severity: str = Form(""),
                    server_id: str = Form(""), service_name: str = Form("", alias="service"),
                    message: str = Form(""), viewer: Viewer = Depends(writer("incidents:write"))) -> Response:
    """The API's ``POST /api/v1/incidents``: the same request model, then ``service.create_incident``."""
    form = {"title": title, "severity": severity, "server_id": server_id, "service": service_name,
            "message": message}
    body: dict[str, Any] = {"title": title, "severity": severity, "message": message}
    if server_id.strip():
        body["server_id"] = int(server_id) if server_id.strip().isdigit() else server_id
    if service_name.strip():
        body["service"] = service_name
    try:
        valid = validated(IncidentCreate, body)
        incident = service.create_incident(session, team_id=viewer.team_id, actor=viewer.principal.actor,
                                           title=valid.title, severity=valid.severity, server_id=valid.server_id,
                                           service=valid.service, detected_at=None, message=valid.message,
                                           now=utcnow())
    except InvalidInput as exc:
        return _list_again(request, session, viewer, form, field_errors(exc))
    return RedirectResponse(f"/incidents/{incident.id}", status_code=303)


def _list_again(request: Request, session: Session, viewer: Viewer, form: dict[str, str],
                errors: dict[str, str]) -> Response:
    session.rollback()
    params = ListParams(per_page=25, cursor=None, sort=None)
    context = {**_listing_context(request, session, viewer, params, dict(NO_FILTERS)), **_common(session, viewer),
               "form": form, "errors": errors, "create_open": True}
    return render(request, "incidents/list.html", context, status=422)


@router.get("/incidents/{incident_id}")
def incident_detail(request: Request, incident_id: IdPath, session: DbSession,
                    viewer: Viewer = Depends(reader("incidents:read"))) -> Response:
    return _detail(request, session, viewer, incident_id)


def _detail(request: Request, session: Session, viewer: Viewer, incident_id: int, *, error: str = "",
            status: int = 200, note: str = "", note_error: str = "") -> Response:
    incident = detail_of(session, service.get_incident(session, team_id=viewer.team_id, incident_id=incident_id))
    parent: IncidentOut | None = None
    if incident.parent_id is not None:
        parent = outs(session, [service.get_incident(session, team_id=viewer.team_id,
                                                     incident_id=incident.parent_id)])[0]
    return render(request, "incidents/detail.html", {
        "incident": incident, "parent": parent, "actor_name": actor_name, "error": error,
        "note": note, "note_error": note_error}, status=status)


ACTIONS = {"acknowledge": service.acknowledge, "resolve": service.resolve, "reopen": service.reopen}


@router.post("/incidents/{incident_id}/{action}")
def incident_action(request: Request, incident_id: IdPath, action: str, session: DbSession,
                    message: str = Form(""), viewer: Viewer = Depends(writer("incidents:write"))) -> Response:
    """Acknowledge, resolve, reopen (the API's ``IncidentAction``), or add a note (``NoteCreate``)."""
    now = utcnow()
    try:
        if action == "notes":
            note = NoteCreate.model_validate({"message": message})
            service.add_note(session, team_id=viewer.team_id, incident_id=incident_id,
                             actor=viewer.principal.actor, message=note.message, now=now)
        elif action in ACTIONS:
            body = IncidentAction.model_validate({"message": message})
            ACTIONS[action](session, team_id=viewer.team_id, incident_id=incident_id,
                            actor=viewer.principal.actor, message=body.message, now=now)
        else:
            return _detail(request, session, viewer, incident_id, error=f"Unknown action: {action}", status=404)
    except ValidationError:
        session.rollback()
        problem = "A note needs some text" if action == "notes" else "The message is invalid"
        return _detail(request, session, viewer, incident_id, note=message, status=422,
                       note_error=f"{problem} (at most 10,000 characters)", error=problem)
    except (Conflict, InvalidInput) as exc:
        session.rollback()
        status = 409 if isinstance(exc, Conflict) else 422
        return _detail(request, session, viewer, incident_id, error=exc.message, status=status)
    return RedirectResponse(f"/incidents/{incident_id}", status_code=303)
