from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime

DEFAULT_TEAM_SLUG = "default"


class Plan(StrEnum):
    FREE = "free"
    PRO = "pro"


# None means uncapped.
SERVER_LIMITS: dict[Plan, int | None] = {Plan.FREE: 3, Plan.PRO: None}
HEARTBEAT_LIMITS: dict[Plan, int | None] = {Plan.FREE: 20, Plan.PRO: None}


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (Index("uq_teams_ping_key", "ping_key", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(16), default=Plan.FREE.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The team's part of slug ping URLs (/heartbeat/{ping_key}/{slug}); made on first use.
    ping_key: Mapped[str | None] = mapped_column(String(32))
    # Whether a ping to an unknown slug with ?create=1 creates the heartbeat.
    ping_create: Mapped[bool] = mapped_column(Boolean, default=False)

    @property
    def server_limit(self) -> int | None:
        return SERVER_LIMITS[Plan(self.plan)]

    @property
    def heartbeat_limit(self) -> int | None:
        return HEARTBEAT_LIMITS[Plan(self.plan)]
