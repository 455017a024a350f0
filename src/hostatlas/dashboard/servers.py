"""``/servers``: the team's servers with their status and the last hour's CPU, memory and disk; ``/servers/{id}``:
one server's facts, charts over a chosen range, what was discovered on it, its history and its logs.

The list is ``GET /api/v1/servers``'s query (``servers.service.listing``, ``paginate``, ``ServerViews.summaries``),
the detail ``GET /api/v1/servers/{id}``'s (``ServerViews.detail``); charts (charts.py) and the log panel
(serverlogs.py) read telemetry as ``/api/v1/servers/{id}/metrics`` and ``/api/v1/logs`` do. Live parts: the list's
statuses (``/servers/statuses``) and the detail's header (``/servers/{id}/live``) poll; charts refetch themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import StringConstraints
from sqlalchemy.orm import Session

from hostatlas.clock import utcnow
from hostatlas.dashboard import charts, serverlogs
from hostatlas.dashboard.rendering import render
from hostatlas.dashboard.routing import PageRoute
from hostatlas.dashboard.viewer import Viewer, reader
from hostatlas.events import service as events
from hostatlas.events.models import Event
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.pagination import ListParams, PageMeta, list_params, paginate
from hostatlas.http.types import IdPath, IdQuery, Storable
from hostatlas.inventory import service as inventory
from hostatlas.inventory.models import InventoryChange, days_until
from hostatlas.servers import service
from hostatlas.servers.models import Server, ServerStatus
from hostatlas.servers.schemas import ServerDetail
from hostatlas.servers.views import ServerViews

router = APIRouter(route_class=PageRoute, include_in_schema=False)
router.include_router(charts.router)
router.include_router(serverlogs.router)

# Certificates this close to expiry get a badge (the first ssl.expiring threshold).
EXPIRING_DAYS = 30
HISTORY_ITEMS = 25
TagFilter = Annotated[str, StringConstraints(max_length=64), Storable]
SearchFilter = Annotated[str, StringConstraints(max_length=255), Storable]
LogSearch = Annotated[str, StringConstraints(max_length=500), Storable]


def _views(request: Request) -> ServerViews:
    return runtime.current(request).part(ServerViews)


def size_mb(megabytes: int | None) -> str:
    if megabytes is None:
        return "–"
    return f"{megabytes / 1024:.1f} GB".replace(".0 GB", " GB") if megabytes >= 1024 else f"{megabytes} MB"




def expiry(moment: date | datetime | None) -> dict[str, Any]:
    """Days left and how worrying that is: expired, expiring (within EXPIRING_DAYS) or valid."""
    left = days_until(moment, utcnow().date())
    state = ("unknown" if left is None else "expired" if left < 0 else "expiring" if left <= EXPIRING_DAYS
             else "valid")
    return {"days": left, "state": state}


# ---------------------------------------------------------------------------------------------------------- list


@router.get("/servers")
def server_list(request: Request, session: DbSession, params: ListParams = Depends(list_params),
                status: ServerStatus | Literal[""] | None = Query(None), tag: TagFilter | None = Query(None),
                q: SearchFilter | None = Query(None),
                viewer: Viewer = Depends(reader("servers:read"))) -> Response:
    status = status or None  # the form's "Any"
    page = paginate(session, service.listing(viewer.team_id, status=status, tag=tag or None, q=q or None),
                    id_column=Server.id, params=params, default_sort="id",
                    sortable={"hostname": Server.hostname, "status": Server.status,
                              "last_seen_at": Server.last_seen_at, "created_at": Server.created_at})
    rows = _views(request).summaries(session, page.rows)
    sparks = charts.sparklines(request, session, viewer, [row.id for row in rows])
    return render(request, "servers/list.html", {
        "servers": rows, "sparks": sparks, "meta": PageMeta(total=page.total, per_page=page.per_page,
                                                            next_cursor=page.next_cursor),
        "filters": {"status": status.value if status else "", "tag": tag or "", "q": q or ""},
        "filtered": bool(status or tag or q or params.cursor)})


@router.get("/servers/statuses")
def server_statuses(request: Request, session: DbSession, id: list[IdQuery] = Query([], max_length=100),
                    viewer: Viewer = Depends(reader("servers:read"))) -> Response:
    """The live part of the list: the poller itself again, and each listed server's status swapped in place."""
    stmt = service.listing(viewer.team_id, status=None, tag=None, q=None).where(Server.id.in_(id))
    rows = _views(request).summaries(session, list(session.scalars(stmt))) if id else []
    return render(request, "servers/statuses.html", {"servers": rows, "ids": id})


# -------------------------------------------------------------------------------------------------------- detail


@dataclass(frozen=True)
class HistoryItem:
    at: datetime
    kind: str  # "event", or a change's action (added, changed, removed)
    title: str
    detail: str
    tone: str  # a badge class: online, offline, info, expiring...


def _change_detail(change: InventoryChange) -> str:
    before, after = change.before or {}, change.after or {}
    if change.action != "changed":
        shown = after or before
        return ", ".join(f"{key} {shown[key]}" for key in ("version", "image", "status", "ssl_expiry", "not_after")
                         if shown.get(key) not in (None, "", []))
    keys = [key for key in sorted({*before, *after}) if before.get(key) != after.get(key)]
    return "; ".join(f"{key}: {before.get(key, '–')} → {after.get(key, '–')}" for key in keys[:3])


EVENT_TONES = {"server.offline": "offline", "server.online": "online", "ssl.expiring": "expiring",
               "incident.created": "open", "incident.resolved": "resolved", "alert.triggered": "firing",
               "alert.resolved": "resolved"}
CHANGE_TONES = {"added": "new", "removed": "stopped", "changed": "info"}


def history(session: Session, viewer: Viewer, server_id: int) -> list[HistoryItem]:
    """The server's events (as ``/api/v1/events?server_id=``) and discovery changes (as
    ``/api/v1/servers/{id}/changes``), newest first."""
    found: list[HistoryItem] = []
    stmt = events.listing(viewer.team_id, types=None, server_id=server_id, after_id=None, since=None, until=None)
    for event in session.scalars(stmt.order_by(Event.id.desc()).limit(HISTORY_ITEMS)):
        if event.type != events.INVENTORY_CHANGED:  # each change is listed below, with its detail
            found.append(HistoryItem(event.created_at, "event", event.type, "", EVENT_TONES.get(event.type, "info")))
    changes = inventory.change_listing(session, viewer.team_id, server_id=server_id, kind=None, action=None)
    for change in session.scalars(changes.order_by(InventoryChange.id.desc()).limit(HISTORY_ITEMS)):
        found.append(HistoryItem(change.created_at, change.action, f"{change.kind} {change.key}",
                                 _change_detail(change), CHANGE_TONES.get(change.action, "info")))
    found.sort(key=lambda item: item.at, reverse=True)
    return found[:HISTORY_ITEMS]


def _detail(request: Request, session: Session, viewer: Viewer, server_id: int) -> ServerDetail:
    server = service.get_server(session, team_id=viewer.team_id, server_id=server_id)  # another team's: 404
    return _views(request).detail(session, server)


@router.get("/servers/{server_id}")
def server_detail(server_id: IdPath, request: Request, session: DbSession,
                  range_: charts.RangeName = Query(charts.DEFAULT_RANGE, alias="range"),
                  q: LogSearch | None = Query(None),
                  viewer: Viewer = Depends(reader("servers:read"))) -> Response:
    server = _detail(request, session, viewer, server_id)
    context: dict[str, Any] = {
        "server": server, "range": range_, "ranges": list(charts.RANGES), "panels": charts.PANELS,
        "live_charts": range_ in charts.LIVE_RANGES, "history": history(session, viewer, server_id),
        "domain_expiry": {domain.name: expiry(domain.ssl_expiry) for domain in server.domains},
        "certificate_expiry": {cert.path: expiry(cert.not_after) for cert in server.certificates},
        "size_mb": size_mb}
    if viewer.can("logs:read"):
        context["log"] = serverlogs.log_page(request, session, viewer, server_id, q, None)
    return render(request, "servers/detail.html", context)


@router.get("/servers/{server_id}/live")
def server_live(server_id: IdPath, request: Request, session: DbSession,
                viewer: Viewer = Depends(reader("servers:read"))) -> Response:
    """The detail's live header: status, last seen, uptime."""
    server = _detail(request, session, viewer, server_id)
    return render(request, "servers/live.html", {"server": server, "size_mb": size_mb})
