"""Tracks when and from where each API key was last used, at most one write per key per resolution."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from hostatlas.apikeys.models import ApiKey
from hostatlas.clock import utcnow
from hostatlas.coalesce import LatestValues
from hostatlas.db.engine import Database
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.isolation import flush_latest
from hostatlas.pipelines.models import QuarantinedItem

PIPELINE = "apikeys.usage"
FLUSH_BATCH = 1000


@dataclass(frozen=True)
class Use:
    at: datetime
    ip: str | None


class KeyUsageTracker:
    def __init__(self, resolution: timedelta) -> None:
        self.resolution = resolution
        self._pending: LatestValues[int, Use] = LatestValues()

    def note(self, key: ApiKey, *, at: datetime, ip: str | None) -> None:
        """Remember a use if what the database holds is older than the resolution."""
        recorded = key.last_used_at
        if recorded is None or at - recorded >= self.resolution:
            self._pending.put(key.id, Use(at, ip))

    def flush(self, db: Database) -> int:
        """Write the uses noted; one the database refuses is set aside (``apikeys.usage``), not retried.
        Raises when the database is down, after putting back what was not written."""
        return flush_latest(self._pending, lambda uses: _write(db, uses), lambda poison: _set_aside(db, poison),
                            batch=FLUSH_BATCH)


def _write(db: Database, uses: list[tuple[int, Use]]) -> None:
    with db.session(write=True) as session:
        for key_id, use in uses:
            _apply(session, key_id, use)


def _apply(session: Session, key_id: int, use: Use) -> None:
    # Several processes flush independently; never move last_used_at backwards.
    session.execute(update(ApiKey).where(ApiKey.id == key_id)
                    .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= use.at))
                    .values(last_used_at=use.at, last_used_ip=use.ip))


def _set_aside(db: Database, poison: list[tuple[tuple[int, Use], Exception]]) -> None:
    with db.session(write=True) as session:
        teams = {row.id: row.team_id for row in session.execute(
            select(ApiKey.id, ApiKey.team_id).where(ApiKey.id.in_([key_id for (key_id, _), _ in poison])))}
        for (key_id, use), exc in poison:
            payload = {"key_id": key_id, "at": use.at.isoformat(), "ip": use.ip}
            quarantine.set_aside(session, pipeline=PIPELINE, reason=quarantine.describe(exc),
                                 payload=json.dumps(payload).encode(), team_id=teams.get(key_id), now=utcnow())


def replay(db: Database, item: QuarantinedItem) -> None:
    """Write a set-aside use (a key deleted meanwhile is no longer there to update)."""
    fields = json.loads(item.payload)
    with db.session(write=True) as session:
        _apply(session, fields["key_id"], Use(datetime.fromisoformat(fields["at"]), fields["ip"]))
