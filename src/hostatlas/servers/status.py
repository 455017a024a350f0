"""The events of a server's status changes, recorded in the transaction that changes the status.

The offline sweep (``servers.jobs``) and the check-in flush or a re-enrolment (``servers.checkins``,
``servers.service``) change the status; both announcements are built here, so they stay one shape, and the
views' status listener (incidents) hears of each flip here too.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from hostatlas.clock import isoformat_z
from hostatlas.events import service as events
from hostatlas.servers.models import Server, ServerStatus
from hostatlas.servers.views import ServerViews


def record_offline(session: Session, server: Server, views: ServerViews) -> None:
    """The server.offline event of a server the sweep just flipped, and its listener's part, in the caller's
    transaction."""
    assert server.offline_since is not None
    events.record(session, team_id=server.team_id, type=events.SERVER_OFFLINE, resource_type="server",
                  resource_id=server.id, server_id=server.id, at=server.offline_since,
                  payload={"server": views.payload(session, server), "previous_status": ServerStatus.ONLINE.value,
                           "offline_since": isoformat_z(server.offline_since)})
    views.listener.server_went_offline(session, server, server.offline_since)


def record_back_online(session: Session, server: Server, offline_since: datetime | None, views: ServerViews) -> None:
    """The server.online event of a server that was offline, and its listener's part, in the caller's
    transaction."""
    events.record(session, team_id=server.team_id, type=events.SERVER_ONLINE, resource_type="server",
                  resource_id=server.id, server_id=server.id, at=server.last_seen_at,
                  payload={"server": views.payload(session, server), "previous_status": ServerStatus.OFFLINE.value,
                           "offline_since": isoformat_z(offline_since) if offline_since else None})
    views.listener.server_came_online(session, server, offline_since, server.last_seen_at)
