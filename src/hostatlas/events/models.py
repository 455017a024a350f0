from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_team_id", "team_id", "id"),
                      Index("ix_events_team_type", "team_id", "type", "id"),
                      Index("ix_events_team_server", "team_id", "server_id", "id"),
                      # The webhook fan-out's queue: events not yet turned into deliveries.
                      Index("ix_events_undispatched", "id", postgresql_where=text("dispatched_at IS NULL"),
                            sqlite_where=text("dispatched_at IS NULL")))

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[int | None]
    # No foreign key: the feed outlives the servers it mentions.
    server_id: Mapped[int | None]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the webhook fan-out made this event's deliveries. Claimed with SKIP LOCKED rather than read
    # by id order, so an event whose transaction commits late is still fanned out.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
