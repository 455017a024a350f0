"""A server's outage as an incident: opened when the offline sweep flips it, resolved when it checks in again.

Servers cannot import incidents (they are lower), so the composition hands ``OutageIncidents`` to
``servers.views.ServerViews`` as its status listener; the sweep and the check-in flush call it in the
transaction that flips the server, next to their server.offline / server.online events.

While the outage lasts, the server's other problems hang under its incident (``service.report`` attaches
new ones; ``server_went_offline`` attaches those already open), and ``recover`` releases them at the end.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostatlas.clock import isoformat_z
from hostatlas.incidents import service
from hostatlas.incidents.models import UNRESOLVED, Incident, Severity, Source
from hostatlas.servers.models import Server


def server_went_offline(session: Session, server: Server, at: datetime) -> None:
    """Open (or reopen) the server's offline incident and attach its other unresolved incidents to it."""
    data = {"offline_since": isoformat_z(at), "last_seen_at": isoformat_z(server.last_seen_at)}
    problem = service.Problem(team_id=server.team_id, source=Source.SERVER, key=service.server_key(server.id),
                              title=f"{server.hostname} is offline", severity=Severity.CRITICAL, server_id=server.id,
                              service=None, data=data, message="The server stopped checking in")
    outage = service.report(session, problem, at=at).incident
    others = session.scalars(select(Incident).where(
        Incident.team_id == server.team_id, Incident.server_id == server.id, Incident.id != outage.id,
        Incident.source != Source.SERVER.value, Incident.parent_id.is_(None), Incident.status.in_(UNRESOLVED))
        .order_by(Incident.id).with_for_update())
    for other in others:
        service.attach(session, outage, other, at)


def server_came_online(session: Session, server: Server, offline_since: datetime | None, at: datetime) -> None:
    """Resolve the offline incident; what was attached and is still unresolved stands on its own again."""
    data = {"offline_since": isoformat_z(offline_since) if offline_since else None, "back_at": isoformat_z(at)}
    service.recover(session, team_id=server.team_id, source=Source.SERVER, key=service.server_key(server.id), at=at,
                    data=data, message="The server checked in again")


def server_deleted(session: Session, server: Server, at: datetime) -> None:
    """A deleted server will never check in again: its outage ends with it (what hung under it stands alone)."""
    service.recover(session, team_id=server.team_id, source=Source.SERVER, key=service.server_key(server.id), at=at,
                    data={"deleted": True}, message="The server was deleted")


class OutageIncidents:
    """``servers.views.StatusListener``: server status flips as incidents."""

    def server_went_offline(self, session: Session, server: Server, at: datetime) -> None:
        server_went_offline(session, server, at)

    def server_came_online(self, session: Session, server: Server, offline_since: datetime | None,
                           at: datetime) -> None:
        server_came_online(session, server, offline_since, at)

    def server_deleted(self, session: Session, server: Server, at: datetime) -> None:
        server_deleted(session, server, at)
