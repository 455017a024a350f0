"""Tracks when and from where each API key was last used, at most one write per key per resolution."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update

from hostatlas.apikeys.models import ApiKey
from hostatlas.coalesce import LatestValues
from hostatlas.db.engine import Database


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
        pending = self._pending.drain()
        if not pending:
            return 0
        try:
            with db.session(write=True) as session:
                for key_id, use in pending.items():
                    # Several processes flush independently; never move last_used_at backwards.
                    session.execute(
                        update(ApiKey)
                        .where(ApiKey.id == key_id)
                        .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= use.at))
                        .values(last_used_at=use.at, last_used_ip=use.ip)
                    )
        except Exception:
            self._pending.restore(pending)
            raise
        return len(pending)
