"""``/heartbeats``: the status board of the team's cron jobs, each one's ping log (with bodies) and flips, and the
forms that create, edit, pause, resume, re-token and delete them.

Every read and write is the REST API's (``heartbeats/routes.py``): the same ``service.listing`` paged with
``list_params``, ``HeartbeatOut.of`` / ``detail_of`` for what a heartbeat shows, ``service.ping_listing`` and
``flip_listing`` for its logs, and the create/update forms go through ``HeartbeatCreate`` / ``HeartbeatUpdate``
then the service, so a form cannot store what the API would refuse. ``/heartbeats/live`` and
``/heartbeats/{id}/live`` are the parts that refresh themselves (htmx polling).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import StringConstraints
from sqlalchemy.orm import Session

from hostatlas.clock import utcnow
from hostatlas.dashboard.rendering import field_errors, query_with, render, validated
from hostatlas.dashboard.routing import PageRoute
from hostatlas.dashboard.viewer import Viewer, reader, writer
from hostatlas.errors import Conflict, InvalidInput
from hostatlas.heartbeats import service
from hostatlas.heartbeats.history import detail_of
from hostatlas.heartbeats.models import Heartbeat, HeartbeatFlip, HeartbeatPing, HeartbeatStatus, PingKind
from hostatlas.heartbeats.schemas import FlipOut, HeartbeatCreate, HeartbeatOut, HeartbeatUpdate, PingOut
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.pagination import ListParams, list_params, paginate
from hostatlas.http.types import IdPath, Storable
from hostatlas.servers import service as servers
from hostatlas.servers.models import Server

router = APIRouter(route_class=PageRoute, include_in_schema=False)

TagQuery = Annotated[str, StringConstraints(max_length=64), Storable]
UNITS = {"minutes": 60, "hours": 3600, "days": 86_400}
SORTABLE = {"name": Heartbeat.name, "slug": Heartbeat.slug, "status": Heartbeat.status,
            "created_at": Heartbeat.created_at}
STATUSES = [status.value for status in HeartbeatStatus]
KINDS = [kind.value for kind in PingKind]




def split_seconds(seconds: int | None) -> tuple[str, str]:
    """A number of seconds as the form's (amount, unit): the largest unit that divides it."""
    if seconds is None:
        return "", "hours"
    for unit in ("days", "hours", "minutes"):
        if seconds % UNITS[unit] == 0 and seconds:
            return str(seconds // UNITS[unit]), unit
    return str(seconds / 60), "minutes"



def _seconds(amount: str, unit: str, field: str, *, required: bool) -> int | None:
    amount = amount.strip()
    if not amount:
        if required:
            raise InvalidInput.single(field, "required", "Required")
        return None
    try:
        value = float(amount) * UNITS.get(unit, 60)
    except ValueError:
        raise InvalidInput.single(field, "not_a_number", "A number is required") from None
    if value != value or value in (float("inf"), float("-inf")) or value != int(value):
        raise InvalidInput.single(field, "not_whole", "A whole number of seconds is required")
    return int(value)


def form_fields(form: Mapping[str, str]) -> dict[str, Any]:
    """The create/edit form's fields as the API's body: interval or schedule, grace, tags, server."""
    fields: dict[str, Any] = {"name": form.get("name", "")}
    if form.get("slug", "").strip():
        fields["slug"] = form["slug"].strip()
    if form.get("kind") == "cron":
        fields["schedule"] = form.get("schedule", "")
        fields["timezone"] = form.get("timezone", "").strip() or "UTC"
    else:
        fields["interval"] = _seconds(form.get("interval", ""), form.get("interval_unit", ""), "interval",
                                      required=True)
    grace = _seconds(form.get("grace", ""), form.get("grace_unit", ""), "grace", required=False)
    if grace is not None:
        fields["grace"] = grace
    fields["tags"] = [tag.strip() for tag in form.get("tags", "").replace(",", " ").split() if tag.strip()]
    server = form.get("server_id", "").strip()
    if server:
        fields["server_id"] = int(server) if server.isdigit() else server
    fields["max_runtime"] = _seconds(form.get("max_runtime", ""), "minutes", "max_runtime", required=False)
    fields["manual_resume"] = form.get("manual_resume") == "on"
    return fields


def form_values(heartbeat: HeartbeatOut | None) -> dict[str, str]:
    """The edit form filled in from a heartbeat (or the create form's defaults)."""
    if heartbeat is None:
        return {"kind": "interval", "interval": "1", "interval_unit": "days", "grace": "1", "grace_unit": "hours",
                "timezone": "UTC"}
    interval, interval_unit = split_seconds(heartbeat.interval)
    grace, grace_unit = split_seconds(heartbeat.grace)
    if heartbeat.grace == 0:
        grace, grace_unit = "0", "minutes"
    return {"name": heartbeat.name, "slug": heartbeat.slug, "kind": "cron" if heartbeat.schedule else "interval",
            "interval": interval, "interval_unit": interval_unit, "schedule": heartbeat.schedule or "",
            "timezone": heartbeat.timezone, "grace": grace, "grace_unit": grace_unit, "tags": " ".join(heartbeat.tags),
            "server_id": str(heartbeat.server_id or ""),
            "max_runtime": "" if heartbeat.max_runtime is None else f"{heartbeat.max_runtime / 60:g}",
            "manual_resume": "on" if heartbeat.manual_resume else ""}


def _servers(session: Session, viewer: Viewer) -> list[Server]:
    """The team's servers for the "runs on" select (only for those who may see servers)."""
    if not viewer.can("servers:read"):
        return []
    stmt = servers.listing(viewer.team_id, status=None, tag=None, q=None)
    return list(session.scalars(stmt.order_by(Server.hostname).limit(500)))


def page_link(request: Request, base: str, **changes: Any) -> str:
    """A link to ``base`` with this request's query, some parameters changed: pagers of live partials point at
    the page, not at the partial."""
    return base + query_with(request, **changes).removeprefix(request.url.path)


def _public_url(request: Request) -> str:
    return runtime.current(request).settings.public_url


def _board(request: Request, session: DbSession, viewer: Viewer, params: ListParams, status: HeartbeatStatus | None,
           tag: str | None) -> dict[str, Any]:
    stmt = service.listing(viewer.team_id, status=status, tag=tag)
    page = paginate(session, stmt, id_column=Heartbeat.id, params=params, default_sort="id", sortable=SORTABLE)
    public_url = _public_url(request)
    return {"heartbeats": [HeartbeatOut.of(row, public_url) for row in page.rows], "page": page,
            "status": status.value if status else "", "tag": tag or "", "statuses": STATUSES,
            "filtered": bool(status or tag),
            "link": lambda **changes: page_link(request, "/heartbeats", **changes)}


@router.get("/heartbeats")
def board(request: Request, session: DbSession, viewer: Viewer = Depends(reader("heartbeats:read")),
          params: ListParams = Depends(list_params), status: HeartbeatStatus | None = Query(None),
          tag: TagQuery | None = Query(None)) -> Response:
    context = _board(request, session, viewer, params, status, tag)
    return render(request, "heartbeats/board.html", {
        **context, "form": form_values(None), "errors": {}, "servers": _servers(session, viewer)})


@router.get("/heartbeats/live")
def board_live(request: Request, session: DbSession, viewer: Viewer = Depends(reader("heartbeats:read")),
               params: ListParams = Depends(list_params), status: HeartbeatStatus | None = Query(None),
               tag: TagQuery | None = Query(None)) -> Response:
    return render(request, "heartbeats/_board.html", _board(request, session, viewer, params, status, tag))


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value[:2000] for key, value in form.items() if isinstance(value, str)}


@router.post("/heartbeats")
async def create(request: Request, session: DbSession,
                 viewer: Viewer = Depends(writer("heartbeats:write"))) -> Response:
    form = await _form(request)
    try:
        body = validated(HeartbeatCreate, form_fields(form))
        heartbeat = service.create_heartbeat(session, team_id=viewer.team_id,
                                             fields=body.model_dump(exclude_unset=True), now=utcnow())
    except (InvalidInput, Conflict) as exc:
        errors = field_errors(exc) if isinstance(exc, InvalidInput) else {"slug": exc.message}
        context = _board(request, session, viewer, list_params(25, None, None), None, None)
        return render(request, "heartbeats/board.html", {
            **context, "form": form, "errors": errors, "servers": _servers(session, viewer), "open_form": True},
            status=422 if isinstance(exc, InvalidInput) else 409)
    return RedirectResponse(f"/heartbeats/{heartbeat.id}?created=1", status_code=303)


def _detail(request: Request, session: DbSession, viewer: Viewer, heartbeat_id: int, params: ListParams,
            kind: PingKind | None) -> dict[str, Any]:
    heartbeat = service.get_heartbeat(session, team_id=viewer.team_id, heartbeat_id=heartbeat_id)
    detail = detail_of(session, heartbeat, _public_url(request))
    pings = paginate(session, service.ping_listing(session, team_id=viewer.team_id, heartbeat_id=heartbeat_id,
                                                   kind=kind),
                     id_column=HeartbeatPing.id, params=params, default_sort="-id", sortable={"at": HeartbeatPing.at})
    flips = paginate(session, service.flip_listing(session, team_id=viewer.team_id, heartbeat_id=heartbeat_id),
                     id_column=HeartbeatFlip.id, params=list_params(10, None, None), default_sort="-id",
                     sortable={"at": HeartbeatFlip.at})
    server = None
    if detail.server_id and viewer.can("servers:read"):
        server = session.get(Server, detail.server_id)
    return {"heartbeat": detail, "pings": [PingOut.of(ping) for ping in pings.rows], "page": pings,
            "flips": [FlipOut.of(flip) for flip in flips.rows], "flip_total": flips.total,
            "kind": kind.value if kind else "", "kinds": KINDS, "server": server,
            "link": lambda **changes: page_link(request, f"/heartbeats/{heartbeat_id}", **changes)}


@router.get("/heartbeats/{heartbeat_id}")
def detail(request: Request, heartbeat_id: IdPath, session: DbSession,
           viewer: Viewer = Depends(reader("heartbeats:read")), params: ListParams = Depends(list_params),
           kind: PingKind | None = Query(None)) -> Response:
    context = _detail(request, session, viewer, heartbeat_id, params, kind)
    return render(request, "heartbeats/detail.html", {
        **context, "form": form_values(context["heartbeat"]), "errors": {}, "servers": _servers(session, viewer),
        "created": request.query_params.get("created") == "1"})


@router.get("/heartbeats/{heartbeat_id}/live")
def detail_live(request: Request, heartbeat_id: IdPath, session: DbSession,
                viewer: Viewer = Depends(reader("heartbeats:read")), params: ListParams = Depends(list_params),
                kind: PingKind | None = Query(None)) -> Response:
    return render(request, "heartbeats/_detail_live.html",
                  _detail(request, session, viewer, heartbeat_id, params, kind))


@router.post("/heartbeats/{heartbeat_id}")
async def update(request: Request, heartbeat_id: IdPath, session: DbSession,
                 viewer: Viewer = Depends(writer("heartbeats:write"))) -> Response:
    form = await _form(request)
    try:
        fields = form_fields(form)
        fields["server_id"] = fields.get("server_id")  # "none" in the select clears it
        fields["max_runtime"] = fields.get("max_runtime")
        if form.get("kind") == "cron":
            fields["interval"] = None
        else:
            fields["schedule"] = None
        body = validated(HeartbeatUpdate, fields)
        service.update_heartbeat(session, team_id=viewer.team_id, heartbeat_id=heartbeat_id,
                                 changes=body.model_dump(exclude_unset=True), now=utcnow())
    except (InvalidInput, Conflict) as exc:
        errors = field_errors(exc) if isinstance(exc, InvalidInput) else {"slug": exc.message}
        context = _detail(request, session, viewer, heartbeat_id, list_params(25, None, None), None)
        return render(request, "heartbeats/detail.html", {
            **context, "form": form, "errors": errors, "servers": _servers(session, viewer), "open_edit": True},
            status=422 if isinstance(exc, InvalidInput) else 409)
    return RedirectResponse(f"/heartbeats/{heartbeat_id}", status_code=303)


@router.post("/heartbeats/{heartbeat_id}/pause")
def pause(request: Request, heartbeat_id: IdPath, session: DbSession,
          viewer: Viewer = Depends(writer("heartbeats:write"))) -> Response:
    service.pause(session, team_id=viewer.team_id, heartbeat_id=heartbeat_id, public_url=_public_url(request),
                  now=utcnow())
    return RedirectResponse(f"/heartbeats/{heartbeat_id}", status_code=303)


@router.post("/heartbeats/{heartbeat_id}/resume")
def resume(request: Request, heartbeat_id: IdPath, session: DbSession,
           viewer: Viewer = Depends(writer("heartbeats:write"))) -> Response:
    service.resume(session, team_id=viewer.team_id, heartbeat_id=heartbeat_id, public_url=_public_url(request),
                   now=utcnow())
    return RedirectResponse(f"/heartbeats/{heartbeat_id}", status_code=303)


@router.post("/heartbeats/{heartbeat_id}/rotate-token")
def rotate_token(heartbeat_id: IdPath, session: DbSession,
                 viewer: Viewer = Depends(writer("heartbeats:write"))) -> Response:
    service.rotate_token(session, team_id=viewer.team_id, heartbeat_id=heartbeat_id, now=utcnow())
    return RedirectResponse(f"/heartbeats/{heartbeat_id}?rotated=1", status_code=303)


@router.post("/heartbeats/{heartbeat_id}/delete")
def delete(heartbeat_id: IdPath, session: DbSession,
           viewer: Viewer = Depends(writer("heartbeats:write"))) -> Response:
    service.delete_heartbeat(session, team_id=viewer.team_id, heartbeat_id=heartbeat_id)
    return RedirectResponse("/heartbeats", status_code=303)
