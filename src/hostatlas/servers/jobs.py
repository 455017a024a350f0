"""Offline detection: servers that have not checked in for HOSTATLAS_OFFLINE_AFTER seconds go offline."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hostatlas.clock import isoformat_z
from hostatlas.db.engine import Database
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.isolation import write_isolating
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.servers.models import Server, ServerStatus
from hostatlas.servers.status import record_offline
from hostatlas.servers.views import ServerViews
from hostatlas.settings import Settings

SWEEP_BATCH = 1000
# A server.offline event that could not be recorded with its server's flip, set aside to be replayed.
OFFLINE_EVENTS = "servers.offline"


def offline_cutoff(settings: Settings, now: datetime) -> datetime:
    # Check-ins reach the database up to one flush interval late; don't call a server offline for that.
    return now - timedelta(seconds=settings.offline_after + settings.flush_interval)


def mark_offline(db: Database, settings: Settings, now: datetime, *, views: ServerViews) -> int:
    """Mark silent servers offline, one ``server.offline`` event each, whatever the number of workers.

    Rows are claimed with FOR UPDATE SKIP LOCKED on PostgreSQL (a concurrent worker or check-in flush
    holding a row makes us skip it) and under SQLite's write lock otherwise; the status condition is
    re-checked by the UPDATE, so a row is only ever flipped once.

    One server whose event cannot be built (bad stored data) must not keep the others online: a batch
    that fails is swept again in halves. A server that fails alone still goes offline, and its event is
    set aside in the same transaction (``servers.offline``) instead of failing the sweep on every tick.
    """
    cutoff = offline_cutoff(settings, now)
    # Looked up outside a write transaction: most ticks find nobody silent and take no write lock.
    with db.session(write=False) as session:
        silent = list(session.scalars(select(Server.id).where(Server.status == ServerStatus.ONLINE.value,
                                                              Server.last_seen_at < cutoff)
                                      .order_by(Server.id).limit(SWEEP_BATCH)))
    flipped = 0

    def sweep(ids: list[int]) -> None:
        nonlocal flipped
        with db.session(write=True) as session:
            flipped += len(_flip(session, ids, cutoff, now, announce=views))

    done = write_isolating(silent, sweep, batch=SWEEP_BATCH)
    for server_id, exc in done.poison:
        flipped += _flip_setting_event_aside(db, server_id, cutoff, now, exc)
    if done.outage is not None:
        raise done.outage
    return flipped


def _flip(session: Session, ids: list[int], cutoff: datetime, now: datetime, *,
          announce: ServerViews | None) -> list[Server]:
    """Flip the still-silent servers among ``ids``; ``announce``: record their events with these views."""
    claim = (select(Server.id).where(Server.id.in_(ids), Server.status == ServerStatus.ONLINE.value,
                                     Server.last_seen_at < cutoff)
             .order_by(Server.id).with_for_update(skip_locked=True))
    claimed = list(session.scalars(claim))
    if not claimed:
        return []
    flipped = list(session.scalars(
        update(Server).where(Server.id.in_(claimed), Server.status == ServerStatus.ONLINE.value)
        .values(status=ServerStatus.OFFLINE.value, offline_since=now).returning(Server.id)))
    servers = []
    for server_id in flipped:
        server = session.get_one(Server, server_id)
        session.refresh(server)
        if announce is not None:
            record_offline(session, server, announce)
        servers.append(server)
    return servers


def _flip_setting_event_aside(db: Database, server_id: int, cutoff: datetime, now: datetime,
                              exc: Exception) -> int:
    with db.session(write=True) as session:
        flipped = _flip(session, [server_id], cutoff, now, announce=None)
        for server in flipped:
            payload = {"server_id": server.id, "offline_since": isoformat_z(now)}
            quarantine.set_aside(session, pipeline=OFFLINE_EVENTS, reason=quarantine.describe(exc),
                                 payload=json.dumps(payload).encode(), team_id=server.team_id, now=now)
    return len(flipped)


def replay_offline_event(db: Database, item: QuarantinedItem, *, views: ServerViews) -> None:
    """Record the set-aside server.offline event, if its server is still in that same offline spell."""
    fields = json.loads(item.payload)
    with db.session(write=True) as session:
        server = session.scalar(select(Server).where(Server.id == fields["server_id"]).with_for_update())
        if server is not None and server.status == ServerStatus.OFFLINE.value and server.offline_since \
                and isoformat_z(server.offline_since) == fields["offline_since"]:
            record_offline(session, server, views)
