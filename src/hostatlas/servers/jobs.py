"""Offline detection: servers that have not checked in for HOSTATLAS_OFFLINE_AFTER seconds go offline."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from hostatlas.clock import isoformat_z
from hostatlas.db.engine import Database
from hostatlas.events import service as events
from hostatlas.servers.models import Server, ServerStatus
from hostatlas.servers.service import payload_of
from hostatlas.settings import Settings

SWEEP_BATCH = 1000


def offline_cutoff(settings: Settings, now: datetime) -> datetime:
    # Check-ins reach the database up to one flush interval late; don't call a server offline for that.
    return now - timedelta(seconds=settings.offline_after + settings.flush_interval)


def mark_offline(db: Database, settings: Settings, now: datetime) -> int:
    """Mark silent servers offline, one ``server.offline`` event each, whatever the number of workers.

    Rows are claimed with FOR UPDATE SKIP LOCKED on PostgreSQL (a concurrent worker or check-in flush
    holding a row makes us skip it) and under SQLite's write lock otherwise; the status condition is
    re-checked by the UPDATE, so a row is only ever flipped once.
    """
    with db.session(write=True) as session:
        claim = (select(Server.id).where(Server.status == ServerStatus.ONLINE.value,
                                         Server.last_seen_at < offline_cutoff(settings, now))
                 .order_by(Server.id).limit(SWEEP_BATCH).with_for_update(skip_locked=True))
        ids = list(session.scalars(claim))
        if not ids:
            return 0
        flipped = list(session.scalars(
            update(Server).where(Server.id.in_(ids), Server.status == ServerStatus.ONLINE.value)
            .values(status=ServerStatus.OFFLINE.value, offline_since=now).returning(Server.id)))
        for server_id in flipped:
            server = session.get_one(Server, server_id)
            session.refresh(server)
            events.record(session, team_id=server.team_id, type=events.SERVER_OFFLINE, resource_type="server",
                          resource_id=server.id, server_id=server.id, at=now,
                          payload={"server": payload_of(session, server),
                                   "previous_status": ServerStatus.ONLINE.value,
                                   "offline_since": isoformat_z(now)})
        return len(flipped)
