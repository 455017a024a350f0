"""Check-ins, coalesced: requests only note the latest check-in per server in memory; a flush every
``HOSTATLAS_FLUSH_INTERVAL`` seconds writes them in one transaction and brings offline servers back
online, with their ``server.online`` events. At 60,000 hosts that is one write batch a second instead
of a thousand single-row transactions.

One check-in the database refuses (a value it cannot store, a server whose event cannot be built) must
not hold up the others: a batch that fails is written again in halves (``pipelines.isolation``), and a
check-in that fails alone is set aside in the quarantine as ``servers.checkins``. A database that is
down is no reason to set anything aside: the check-ins go back into the buffer for the next pass.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, bindparam, case, func, select, text, update
from sqlalchemy.orm import Session

from hostatlas.clock import utcnow
from hostatlas.coalesce import LatestValues
from hostatlas.db.engine import Database
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.isolation import flush_latest
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.servers.models import Server, ServerStatus
from hostatlas.servers.status import record_back_online
from hostatlas.servers.views import ServerViews

FLUSH_BATCH = 2000
PIPELINE = "servers.checkins"
# Core, not ORM, for the bulk statements: a thousand rows a second should cost no per-row objects.
SERVERS = cast(Table, Server.__table__)


@dataclass(frozen=True)
class Checkin:
    at: datetime
    agent_version: str | None
    uptime_s: int | None
    boot_id: str | None


def check_in(buffer: CheckinBuffer, server_id: int, *, agent_version: str | None, uptime_s: int | None,
             boot_id: str | None) -> datetime:
    """What a check-in does, whichever path served it: noted for the next flush. Returns when it arrived."""
    now = utcnow()
    buffer.note(server_id, Checkin(at=now, agent_version=agent_version, uptime_s=uptime_s, boot_id=boot_id))
    return now


class CheckinBuffer:
    def __init__(self, views: ServerViews) -> None:
        self.views = views  # a server back online is announced with its summary
        self._pending: LatestValues[int, Checkin] = LatestValues()

    def note(self, server_id: int, checkin: Checkin) -> None:
        self._pending.put(server_id, checkin)

    def forget(self, server_id: int) -> None:
        self._pending.drain_key(server_id)

    def flush(self, db: Database) -> int:
        """Write what is buffered; returns how many check-ins were written. Raises when the database
        is down, after putting back what was not written (never over a newer check-in)."""

        def write(batch: list[tuple[int, Checkin]]) -> None:
            with db.session(write=True) as session:
                apply_checkins(session, dict(batch), self.views)

        return flush_latest(self._pending, write, lambda poison: _set_aside(db, poison), batch=FLUSH_BATCH)


def apply_checkins(session: Session, checkins: dict[int, Checkin], views: ServerViews) -> None:
    # Lock the rows first (PostgreSQL), in id order: a concurrent offline sweep either committed already,
    # and its status is read here, or skips these rows. Reading status before locking could miss an
    # offline flip that commits meanwhile and leave a server.offline without its server.online.
    locked = session.execute(select(Server.id, Server.status, Server.offline_since)
                             .where(Server.id.in_(list(checkins))).order_by(Server.id).with_for_update()).all()
    came_back = {row.id: row.offline_since for row in locked if row.status == ServerStatus.OFFLINE.value}
    if session.get_bind().dialect.name == "postgresql":
        _update_postgresql(session, checkins)
    else:
        _update_portable(session, checkins)
    for server_id, offline_since in came_back.items():
        server = session.get_one(Server, server_id)
        session.refresh(server)
        record_back_online(session, server, offline_since, views)


# For everyone at once. A fact a check-in left out keeps its stored value, and last_seen_at never moves
# backwards when another process flushed a later check-in first.
_POSTGRESQL_UPDATE = text("""
    UPDATE servers AS s SET
        last_seen_at = GREATEST(s.last_seen_at, v.at), status = 'online', offline_since = NULL,
        agent_version = COALESCE(v.agent_version, s.agent_version),
        uptime_s = COALESCE(v.uptime_s, s.uptime_s), boot_id = COALESCE(v.boot_id, s.boot_id)
    FROM unnest(CAST(:ids AS bigint[]), CAST(:ats AS timestamp[]), CAST(:versions AS varchar[]),
                CAST(:uptimes AS bigint[]), CAST(:boots AS varchar[])) AS v(id, at, agent_version, uptime_s, boot_id)
    WHERE s.id = v.id
""")


def _update_postgresql(session: Session, checkins: dict[int, Checkin]) -> None:
    """One statement for the whole batch: a thousand single-row UPDATEs cost PostgreSQL ten times more."""
    items = list(checkins.items())
    session.execute(_POSTGRESQL_UPDATE, {
        "ids": [server_id for server_id, _ in items],
        # The column holds naive UTC (see db.base.UTCDateTime).
        "ats": [c.at.astimezone(UTC).replace(tzinfo=None) for _, c in items],
        "versions": [c.agent_version for _, c in items],
        "uptimes": [c.uptime_s for _, c in items],
        "boots": [c.boot_id for _, c in items],
    })


def _update_portable(session: Session, checkins: dict[int, Checkin]) -> None:
    """One executemany of one statement; in-process SQLite makes each row cheap."""
    session.execute(
        update(SERVERS).where(SERVERS.c.id == bindparam("server_id")).values(
            last_seen_at=case((SERVERS.c.last_seen_at > bindparam("at"), SERVERS.c.last_seen_at),
                              else_=bindparam("at")),
            status=ServerStatus.ONLINE.value, offline_since=None,
            agent_version=func.coalesce(bindparam("agent_version"), SERVERS.c.agent_version),
            uptime_s=func.coalesce(bindparam("uptime_s"), SERVERS.c.uptime_s),
            boot_id=func.coalesce(bindparam("boot_id"), SERVERS.c.boot_id)),
        [{"server_id": server_id, "at": c.at, "agent_version": c.agent_version, "uptime_s": c.uptime_s,
          "boot_id": c.boot_id} for server_id, c in checkins.items()],
    )


def _set_aside(db: Database, poison: list[tuple[tuple[int, Checkin], Exception]]) -> None:
    """Quarantine check-ins that failed alone, in one transaction (logged there, once each)."""
    with db.session(write=True) as session:
        teams = {row.id: row.team_id for row in session.execute(
            select(Server.id, Server.team_id).where(Server.id.in_([server_id for (server_id, _), _ in poison])))}
        for (server_id, checkin), exc in poison:
            quarantine.set_aside(session, pipeline=PIPELINE, reason=quarantine.describe(exc),
                                 payload=encode(server_id, checkin), team_id=teams.get(server_id), now=utcnow())


def encode(server_id: int, checkin: Checkin) -> bytes:
    return json.dumps({"server_id": server_id, **asdict(checkin), "at": checkin.at.isoformat()}).encode()


def decode(payload: bytes) -> tuple[int, Checkin]:
    fields = json.loads(payload)
    server_id = fields.pop("server_id")
    return server_id, Checkin(**{**fields, "at": datetime.fromisoformat(fields["at"])})


def replay(db: Database, item: QuarantinedItem, *, views: ServerViews) -> None:
    """Apply a quarantined check-in, unless its server was deleted meanwhile (nothing left to apply it to)."""
    server_id, checkin = decode(item.payload)
    with db.session(write=True) as session:
        if session.get(Server, server_id) is not None:
            apply_checkins(session, {server_id: checkin}, views)
