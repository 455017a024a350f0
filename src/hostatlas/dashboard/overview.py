"""``/``: what a sysadmin opens every morning: servers up and down, what is on fire, what happened lately.

Each figure is the count of the same domain query the API lists with (``servers.service.listing``,
``incidents.service.listing``...), so the overview and the lists cannot disagree. ``/overview/live`` is the part
that refreshes itself (htmx polling) while the page stays open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from hostatlas.alerts.models import AlertRule, AlertState
from hostatlas.dashboard.rendering import render
from hostatlas.dashboard.routing import PageRoute
from hostatlas.dashboard.viewer import Viewer, signed_in
from hostatlas.events import service as events
from hostatlas.events.models import Event
from hostatlas.heartbeats import service as heartbeats
from hostatlas.heartbeats.models import HeartbeatStatus
from hostatlas.http.deps import DbSession
from hostatlas.incidents import service as incidents
from hostatlas.incidents.models import Incident, IncidentStatus
from hostatlas.incidents.views import outs as incident_outs
from hostatlas.servers import service as servers
from hostatlas.servers.models import ServerStatus

router = APIRouter(route_class=PageRoute, include_in_schema=False)
OPEN = (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED)


def count(session: Session, stmt: Select[Any]) -> int:
    return session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0


@dataclass(frozen=True)
class Figures:
    servers_online: int
    servers_offline: int
    incidents_open: int
    alerts_firing: int
    heartbeats_down: int


def figures(session: Session, viewer: Viewer) -> Figures:
    team_id = viewer.team_id
    firing = (select(AlertState.id).join(AlertRule, AlertRule.id == AlertState.rule_id)
              .where(AlertState.team_id == team_id, AlertState.state == "firing"))
    return Figures(
        servers_online=count(session, servers.listing(team_id, status=ServerStatus.ONLINE, tag=None, q=None))
        if viewer.can("servers:read") else 0,
        servers_offline=count(session, servers.listing(team_id, status=ServerStatus.OFFLINE, tag=None, q=None))
        if viewer.can("servers:read") else 0,
        incidents_open=count(session, incidents.listing(team_id, statuses=OPEN))
        if viewer.can("incidents:read") else 0,
        alerts_firing=count(session, firing) if viewer.can("alert_rules:read") else 0,
        heartbeats_down=count(session, heartbeats.listing(team_id, status=HeartbeatStatus.DOWN))
        if viewer.can("heartbeats:read") else 0,
    )


# Where an event's resource is shown in the dashboard.
RESOURCE_PAGES = {"server": "/servers/{}", "incident": "/incidents/{}", "heartbeat": "/heartbeats/{}",
                  "alert_rule": "/alerts/{}/edit", "webhook": "/webhooks/{}"}
NAME_FIELDS = ("hostname", "display_name", "title", "name", "domain", "url")


@dataclass(frozen=True)
class EventLine:
    event: Event
    subject: str  # what it is about, in words: "web-prod-01", "Disk full on db-1"
    link: str | None


def describe(event: Event) -> EventLine:
    """An event as the overview lists it: its payload carries the resource as the API shows it (at the top, or one
    level down: ``{"server": {...}}``); its most telling name is used."""
    subject = ""
    payload = event.payload or {}
    for value in [payload, *payload.values()]:
        if isinstance(value, dict):
            subject = next((str(value[k]) for k in NAME_FIELDS if isinstance(value.get(k), str) and value[k]), "")
            if subject:
                break
    page = RESOURCE_PAGES.get(event.resource_type)
    link = page.format(event.resource_id) if page and event.resource_id and event.type != "server.deleted" else None
    return EventLine(event, subject or f"{event.resource_type} #{event.resource_id or ''}", link)


def _live_context(session: Session, viewer: Viewer) -> dict[str, Any]:
    context: dict[str, Any] = {"figures": figures(session, viewer), "incidents": [], "events": []}
    if viewer.can("incidents:read"):
        rows = session.scalars(incidents.listing(viewer.team_id, statuses=OPEN)
                               .order_by(Incident.detected_at.desc(), Incident.id.desc()).limit(8))
        context["incidents"] = incident_outs(session, list(rows))
    if viewer.can("servers:read"):
        stmt = events.listing(viewer.team_id, types=None, server_id=None, after_id=None, since=None, until=None)
        context["events"] = [describe(e) for e in session.scalars(stmt.order_by(Event.id.desc()).limit(12))]
    return context


@router.get("/")
def overview(request: Request, session: DbSession, viewer: Viewer = Depends(signed_in)) -> Response:
    return render(request, "overview.html", _live_context(session, viewer))


@router.get("/overview/live")
def overview_live(request: Request, session: DbSession, viewer: Viewer = Depends(signed_in)) -> Response:
    return render(request, "partials/overview_live.html", _live_context(session, viewer))
