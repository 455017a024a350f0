from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime


class QuarantinedItem(Base):
    """An item a pipeline set aside after it kept failing: kept with its reason until replayed or dropped."""

    __tablename__ = "quarantined_items"
    __table_args__ = (Index("ix_quarantined_items_pipeline", "pipeline", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Which pipeline set it aside, e.g. "telemetry.metrics", "servers.checkins": it decides how to replay it.
    pipeline: Mapped[str] = mapped_column(String(64))
    # No foreign key: a quarantined item outlives its team's rows (and is an operator's, not a tenant's, concern).
    team_id: Mapped[int | None]
    reason: Mapped[str] = mapped_column(Text)
    # What the pipeline needs to try again, in its own encoding (JSON, a spool frame...).
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    failures: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
