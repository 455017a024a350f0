"""Incidents and their timelines.

An incident is one outage of one thing: opened by hand, or automatically by a source (a server going offline,
an alert rule, a heartbeat, a certificate, an agent's crash report) under a key that names the thing within
its team and source (``heartbeat:12``). While it is open, the same problem again is a follow-up on its
timeline, never a second incident: the partial unique index below makes that hold with several workers.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime

TITLE_MAX = 200
SOURCE_KEY_MAX = 200
SERVICE_MAX = 255
ACTOR_MAX = 300


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Higher is worse: a follow-up may raise an incident's severity, never lower it."""
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


class IncidentStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class IncidentType(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class Source(StrEnum):
    MANUAL = "manual"
    SERVER = "server"  # the server stopped checking in
    ALERT = "alert"  # an alert rule fired
    HEARTBEAT = "heartbeat"  # a heartbeat went down
    CERTIFICATE = "certificate"  # a certificate is about to expire or has
    CRASH = "crash"  # an agent's crash report (POST /api/v1/agent/incidents)


class EntryKind(StrEnum):
    OPENED = "opened"
    FOLLOW_UP = "follow_up"  # the same problem reported again while open, with its data
    ACKNOWLEDGED = "acknowledged"
    NOTE = "note"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    ATTACHED = "attached"  # on a server-offline incident: another incident joined it (and on that one too)
    DETACHED = "detached"  # the outage ended, or the attached incident recovered during it


# The statuses in which an incident is still someone's problem.
UNRESOLVED = (IncidentStatus.OPEN.value, IncidentStatus.ACKNOWLEDGED.value)
_UNRESOLVED_SQL = text("status IN ('open', 'acknowledged')")


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_team_status", "team_id", "status"),
        Index("ix_incidents_team_severity", "team_id", "severity"),
        Index("ix_incidents_team_server", "team_id", "server_id"),
        Index("ix_incidents_team_detected_at", "team_id", "detected_at"),
        # The latest incident of a (team, source, key): what a report follows up on or reopens.
        Index("ix_incidents_source_key", "team_id", "source", "source_key", "id"),
        # At most one unresolved incident per (team, source, key): two workers reporting the same problem at
        # once make one incident and one follow-up. Manual incidents have no key (NULLs never collide).
        Index("uq_incidents_unresolved_key", "team_id", "source", "source_key", unique=True,
              postgresql_where=_UNRESOLVED_SQL, sqlite_where=_UNRESOLVED_SQL),
        Index("ix_incidents_parent_id", "parent_id"),
        Index("ix_incidents_server_id", "server_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=IncidentStatus.OPEN.value)
    type: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    source_key: Mapped[str | None] = mapped_column(String(SOURCE_KEY_MAX))
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="SET NULL"))
    service: Mapped[str | None] = mapped_column(String(SERVICE_MAX))
    # The server-offline incident this one is attached to (its dependency was down).
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    # Opened while attached, and so never announced (yet): no incident.created went out for it.
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by: Mapped[str | None] = mapped_column(String(ACTOR_MAX))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(ACTOR_MAX))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IncidentEntry(Base):
    """One line of an incident's timeline: what happened, when, who did it, and what was known then."""

    __tablename__ = "incident_entries"
    __table_args__ = (Index("ix_incident_entries_incident_id", "incident_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    # ``api_key:<id>:<name>``, ``agent`` or ``system``.
    actor: Mapped[str] = mapped_column(String(ACTOR_MAX))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
