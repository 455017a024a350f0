"""Heartbeats (cron and job monitors), their ping log and their status flips."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime
from hostatlas.secretbox import Sealed


class HeartbeatStatus(StrEnum):
    NEW = "new"  # never pinged: nothing is due yet
    UP = "up"
    LATE = "late"  # past due, within grace
    DOWN = "down"
    PAUSED = "paused"
    STARTED = "started"  # a run reported /start and has not ended


class PingKind(StrEnum):
    SUCCESS = "success"
    START = "start"
    FAIL = "fail"
    LOG = "log"  # recorded, no status change


class Heartbeat(Base):
    __tablename__ = "heartbeats"
    __table_args__ = (
        UniqueConstraint("team_id", "slug", name="uq_heartbeats_team_slug"),
        # The worker's only query: what must change by now. A heartbeat with nothing pending has NULL here.
        Index("ix_heartbeats_deadline_at", "deadline_at"),
        Index("ix_heartbeats_team_status", "team_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    slug: Mapped[str] = mapped_column(String(100))
    # The ping URL's secret: its SHA-256 finds the heartbeat; the sealed copy shows the URL again.
    ping_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    ping_token: Mapped[str] = mapped_column(Sealed(255))
    # Exactly one of interval (seconds) and schedule (cron, read in ``timezone``) is set.
    interval: Mapped[int | None] = mapped_column(Integer)
    schedule: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    grace: Mapped[int] = mapped_column(Integer)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="SET NULL"), index=True)
    min_runtime: Mapped[int | None] = mapped_column(Integer)
    max_runtime: Mapped[int | None] = mapped_column(Integer)
    manual_resume: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=HeartbeatStatus.NEW.value)
    last_ping_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_start_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Runs started with ?rid= and not ended yet: rid -> ISO start time (bounded, oldest dropped).
    open_runs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    last_duration_s: Mapped[float | None] = mapped_column(Float)
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the worker must next look at this heartbeat (late at due, down at due + grace, down at the end
    # of a started run's allowance); NULL while nothing can change without a ping (new, paused, down).
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class HeartbeatTag(Base):
    """One row per (heartbeat, tag), so ``?tag=`` filters with an index instead of scanning JSON."""

    __tablename__ = "heartbeat_tags"
    __table_args__ = (Index("ix_heartbeat_tags_team_tag", "team_id", "tag"),)

    heartbeat_id: Mapped[int] = mapped_column(ForeignKey("heartbeats.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))


class HeartbeatPing(Base):
    __tablename__ = "heartbeat_pings"
    __table_args__ = (Index("ix_heartbeat_pings_heartbeat_id", "heartbeat_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    heartbeat_id: Mapped[int] = mapped_column(ForeignKey("heartbeats.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    exit_status: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    rid: Mapped[str | None] = mapped_column(String(64))
    duration_s: Mapped[float | None] = mapped_column(Float)
    remote_addr: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    # The first HOSTATLAS_PING_BODY_BYTES of the body, as sent (bytes: a job's output need not be text).
    body: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    body_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    too_often: Mapped[bool] = mapped_column(Boolean, default=False)


class HeartbeatFlip(Base):
    """Every status change, with its moment and its cause (kept a year)."""

    __tablename__ = "heartbeat_flips"
    __table_args__ = (Index("ix_heartbeat_flips_heartbeat_id", "heartbeat_id", "id"),
                      Index("ix_heartbeat_flips_at", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    heartbeat_id: Mapped[int] = mapped_column(ForeignKey("heartbeats.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str] = mapped_column(String(64))
