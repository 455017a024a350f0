from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime

DEFAULT_TEAM_SLUG = "default"


class Plan(StrEnum):
    FREE = "free"
    PRO = "pro"


# None means uncapped.
SERVER_LIMITS: dict[Plan, int | None] = {Plan.FREE: 3, Plan.PRO: None}


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(16), default=Plan.FREE.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def server_limit(self) -> int | None:
        return SERVER_LIMITS[Plan(self.plan)]
